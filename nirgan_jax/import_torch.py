"""``python -m nirgan_jax.import_torch``: runs ``nirgan_jax.infer.import_torch``."""

from nirgan_jax import errors
from nirgan_jax.infer.import_torch import main

if __name__ == "__main__":
  errors.run(main)
