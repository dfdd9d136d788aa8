"""``python -m nirgan_jax.export``: runs ``nirgan_jax.train.export``."""

from nirgan_jax import errors
from nirgan_jax.train.export import main

if __name__ == "__main__":
  errors.run(main)
