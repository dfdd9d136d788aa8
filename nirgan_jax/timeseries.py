"""``python -m nirgan_jax.timeseries``: runs ``nirgan_jax.infer.timeseries``."""

from nirgan_jax import errors
from nirgan_jax.infer.timeseries import main

if __name__ == "__main__":
  errors.run(main)
