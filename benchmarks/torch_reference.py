"""A PyTorch reference of NIR-GAN's networks, written from the published description
(its layer lists and state_dict key names), used to check weight import and numerics.

Module and ``nn.Sequential`` indices reproduce the original's state_dict key layout.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F


class ResnetBlock(nn.Module):
  def __init__(self, dim):
    super().__init__()
    self.conv_block = nn.Sequential(
        nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim), nn.ReLU(True),
        nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim))

  def forward(self, x):
    return x + self.conv_block(x)


class InjectGenerator(nn.Module):
  def __init__(self, ngf=64, n_blocks=9, inject_style="multiply", post_correction=False,
               map_size=128, embed_dim=256):
    super().__init__()
    layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
    for i in range(2):
      mult = 2**i
      layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1),
                 nn.InstanceNorm2d(ngf * mult * 2), nn.ReLU(True)]
    layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
    for i in range(2):
      mult = 2 ** (2 - i)
      layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1,
                                    output_padding=1),
                 nn.InstanceNorm2d(ngf * mult // 2), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 1, 7), nn.Tanh()]
    self.model = nn.Sequential(*layers)
    self.inject_style = inject_style
    self.map_size = map_size
    self.fc = nn.Linear(embed_dim, map_size * map_size)
    self.scale_param = nn.Parameter(torch.tensor(0.01))
    self.post_correction = post_correction
    if post_correction:
      self.post_correction_param = nn.Parameter(torch.tensor(1.0))

  def forward(self, rgb, embedding):
    x = self.model[:6](rgb)
    e = self.fc(embedding).view(-1, 1, self.map_size, self.map_size)
    e = F.interpolate(e, size=(x.shape[-2], x.shape[-1]), mode="bilinear", align_corners=False)
    e = e.repeat(1, x.shape[1], 1, 1)
    x = x * (1 + self.scale_param * e) if self.inject_style == "multiply" else (
        x + self.scale_param * e)
    x = self.model[6:](x)
    return x * self.post_correction_param if self.post_correction else x


class PatchDiscriminator(nn.Module):
  def __init__(self, ndf=64, n_layers=3):
    super().__init__()
    layers = [nn.Conv2d(4, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
    mult = 1
    for n in range(1, n_layers + 1):
      prev, mult = mult, min(2**n, 8)
      layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2 if n < n_layers else 1, padding=1),
                 nn.InstanceNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
    layers += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
    self.model = nn.Sequential(*layers)

  def forward(self, x):
    return self.model(x)


def _associated_legendre(l, m, x):
  """P_l^m(x) with the Condon-Shortley phase, by the standard recurrence (float64)."""
  pmm = torch.ones_like(x)
  somx2 = torch.sqrt((1 - x) * (1 + x))
  fact = 1.0
  for _ in range(m):
    pmm = -pmm * fact * somx2
    fact += 2.0
  if l == m:
    return pmm
  pmmp1 = x * (2 * m + 1) * pmm
  for ll in range(m + 2, l + 1):
    pmm, pmmp1 = pmmp1, ((2 * ll - 1) * x * pmmp1 - (ll + m - 1) * pmm) / (ll - m)
  return pmmp1


def spherical_harmonics(lonlat, legendre_polys, convention="analytic"):
  phi = torch.deg2rad(lonlat[:, 0] + 180)
  theta = torch.deg2rad(lonlat[:, 1] + 90)
  out = []
  for l in range(legendre_polys):
    for m in range(-l, l + 1):
      am = abs(m)
      k = math.sqrt((2 * l + 1) * math.factorial(l - am) / (4 * math.pi * math.factorial(l + am)))
      p = _associated_legendre(l, am, torch.cos(theta))
      if m == 0:
        y = (math.sqrt((2 * l + 1) / 4 * math.pi) if convention == "analytic" else k) * p
      else:
        angular = torch.cos(m * phi) if m > 0 else torch.sin(am * phi)
        y = math.sqrt(2) * k * p * angular * ((-1) ** m if convention == "analytic" else 1)
      out.append(y)
  return torch.stack(out, dim=-1)


class Siren(nn.Module):
  def __init__(self, dim_in, dim_out, w0, first=False, linear=False):
    super().__init__()
    bound = 1 / dim_in if first else math.sqrt(6 / dim_in) / w0
    self.weight = nn.Parameter(torch.empty(dim_out, dim_in).uniform_(-bound, bound))
    self.bias = nn.Parameter(torch.empty(dim_out).uniform_(-bound, bound))
    self.w0, self.linear = w0, linear

  def forward(self, x):
    out = F.linear(x, self.weight, self.bias)
    return out if self.linear else torch.sin(self.w0 * out)


class SirenNet(nn.Module):
  def __init__(self, dim_in, dim_hidden=256, dim_out=256, num_layers=2):
    super().__init__()
    self.layers = nn.ModuleList(
        [Siren(dim_in if i == 0 else dim_hidden, dim_hidden, 30.0 if i == 0 else 1.0, first=i == 0)
         for i in range(num_layers)])
    self.last_layer = Siren(dim_hidden, dim_out, 1.0, linear=True)

  def forward(self, x):
    for layer in self.layers:
      x = layer(x)
    return self.last_layer(x)


class LocationEncoder(nn.Module):
  def __init__(self, legendre_polys=10, dim_hidden=256, embed_dim=256, num_layers=2,
               convention="analytic"):
    super().__init__()
    self.legendre_polys, self.convention = legendre_polys, convention
    self.nnet = SirenNet(legendre_polys**2, dim_hidden, embed_dim, num_layers)

  def forward(self, lonlat):
    return self.nnet(spherical_harmonics(lonlat, self.legendre_polys, self.convention))


class NIRGANModule(nn.Module):
  """Key layout of the original Lightning module: netG, netD, satclip_model.encoder_model."""

  def __init__(self, ngf=64, n_blocks=9, ndf=64, n_layers=3, inject_style="multiply",
               post_correction=False, legendre_polys=10, satclip_hidden=256, embed_dim=256,
               map_size=128):
    super().__init__()
    self.netG = InjectGenerator(ngf, n_blocks, inject_style, post_correction, map_size, embed_dim)
    self.netD = PatchDiscriminator(ndf, n_layers)
    self.satclip_model = nn.Module()
    self.satclip_model.encoder_model = LocationEncoder(legendre_polys, satclip_hidden, embed_dim)
    self.criterionGAN = nn.Module()
    self.criterionGAN.register_buffer("real_label", torch.tensor(1.0))
    self.criterionGAN.register_buffer("fake_label", torch.tensor(0.0))


def randomize_(module: nn.Module, generator: torch.Generator) -> None:
  """N(0, 0.02) weights and small random biases, so that a zero bias cannot hide a bug."""
  with torch.no_grad():
    for name, p in module.named_parameters():
      if "satclip_model" in name:
        continue
      if p.ndim == 0:
        p.add_(torch.randn((), generator=generator) * 0.1)
      elif name.endswith("bias"):
        p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
      else:
        p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
