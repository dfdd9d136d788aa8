"""The one tiny config of the tests: the demo recipe shrunk until a step compiles and runs in
seconds on 2 cores. Unit tests take it through ``conftest.tiny_config``; the end-to-end
tests train with it, in process and through the command line."""

import ml_collections

from configs import demo


def get_config() -> ml_collections.ConfigDict:
  config = demo.get_config()
  config.pad = 4
  config.model.conv_impl = "xla"  # compiles faster; tests/test_layers.py checks matmul against it
  config.model.generator.ngf = 8
  config.model.generator.n_blocks = 2
  config.model.discriminator.ndf = 8
  config.model.discriminator.n_layers = 2
  config.model.injection.map_size = 16
  config.satclip.legendre_polys = 4
  config.satclip.dim_hidden = 16
  config.satclip.embed_dim = 16
  config.optim.lr = 2e-4

  config.data.sources.demo.name = "nirgan_demo/small"
  config.data.image_size = 32
  config.data.batch_size_per_device = 2
  config.data.read_threads = 2
  config.data.prefetch_buffer = 4
  config.data.workers = 0  # "auto" times the pipeline and the step at every start

  config.train.num_train_steps = 4
  config.train.eval_every = 2
  config.train.log_every = 1
  config.train.image_every = 2
  config.train.num_images = 2
  config.train.eval_ssim_window = 3
  return config
