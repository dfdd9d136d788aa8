"""``python -m nirgan_jax.predict``: runs ``nirgan_jax.infer.predict``."""

from nirgan_jax import errors
from nirgan_jax.infer.predict import main

if __name__ == "__main__":
  errors.run(main)
