"""Architecture knobs of NIR-GAN with the reference model's values.

Training configs (``configs/*.py``) start from this and add data, loss and
optimiser sections; model directories (import, export) store exactly these
sections, so inference tools rebuild the networks without the training configs.
"""

import ml_collections

MODEL_SECTIONS = ("pad", "compute_dtype", "model", "satclip")


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # RGB is reflect-padded by this many pixels before the generator and the prediction
  # cropped back (the original's remedy for edge artefacts).
  config.pad = 10
  config.compute_dtype = "float32"  # or "bfloat16": bf16 compute, fp32 params and norms

  config.model = ml_collections.ConfigDict()
  # "auto": matmul-lowered convolutions on CPU (several times faster there), XLA's on GPU/TPU.
  config.model.conv_impl = "auto"
  config.model.generator = ml_collections.ConfigDict(dict(
      kind="resnet",  # resnet (NIR-GAN) | linear | mlp | cnn (baselines, configs/baselines.py)
      ngf=64, n_blocks=9, norm="instance", padding_type="reflect", dropout_rate=0.0,
      # A per-pixel map of the RGB added to the output before its tanh, so that absolute
      # brightness survives the instance norms: 0 off (the reference network), 1 linear,
      # >= 2 an MLP of that many layers, radiometry_hidden wide.
      radiometry_depth=0, radiometry_hidden=32,
      # The ResNet's output scaled by a learnt scalar that starts at 0 (needs the radiometry
      # path): training starts from the per-pixel estimate alone.
      correction_gate=False))
  # Width and depth of the mlp and cnn baselines.
  config.model.baseline = ml_collections.ConfigDict(dict(hidden=64, depth=3))
  config.model.injection = ml_collections.ConfigDict(dict(
      style="multiply",  # multiply | add | concat | none
      map_size=128,  # side of the square map the SatCLIP Dense produces
      scale_init=0.01,
      learn_scale=True,
      post_correction=False,  # learnable scalar on the output (init 1)
      concat_factor=1.0,  # "concat" style: factor on the 4th input channel
  ))
  config.model.discriminator = ml_collections.ConfigDict(dict(ndf=64, n_layers=3,
                                                              norm="instance"))

  config.satclip = ml_collections.ConfigDict(dict(
      legendre_polys=10,
      harmonics="analytic",  # analytic | closed-form: the convention the weights were trained with
      dim_hidden=256,
      num_hidden_layers=2,
      embed_dim=256,
      checkpoint="",  # SatCLIP .ckpt or converted model dir; required unless allow_random_init
      allow_random_init=False,
  ))
  return config


def model_sections(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The architecture part of a full training config."""
  return ml_collections.ConfigDict({k: config[k] for k in MODEL_SECTIONS})
