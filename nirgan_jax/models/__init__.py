"""The networks of NIR-GAN (Flax), their reference config, and builders that read it."""

from nirgan_jax.models.baselines import CNNNIR, MLPNIR
from nirgan_jax.models.builders import (
    COMPUTE_DTYPES,
    GENERATOR_KINDS,
    build_discriminator,
    build_generator,
    build_location_encoder,
    compute_dtype,
    uses_location,
)
from nirgan_jax.models.discriminator import PatchDiscriminator
from nirgan_jax.models.generator import INJECTION_STYLES, Generator
from nirgan_jax.models.layers import count_params
from nirgan_jax.models.nirgan import NIRGAN, init_location_encoder
from nirgan_jax.models.satclip import LocationEncoder, spherical_harmonics

__all__ = [
    "CNNNIR",
    "COMPUTE_DTYPES",
    "GENERATOR_KINDS",
    "INJECTION_STYLES",
    "MLPNIR",
    "NIRGAN",
    "Generator",
    "LocationEncoder",
    "PatchDiscriminator",
    "build_discriminator",
    "build_generator",
    "build_location_encoder",
    "compute_dtype",
    "count_params",
    "init_location_encoder",
    "spherical_harmonics",
    "uses_location",
]
