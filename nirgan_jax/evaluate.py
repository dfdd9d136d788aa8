"""``python -m nirgan_jax.evaluate``: runs ``nirgan_jax.infer.evaluate``."""

from nirgan_jax import errors
from nirgan_jax.infer.evaluate import main

if __name__ == "__main__":
  errors.run(main)
