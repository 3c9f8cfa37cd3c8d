"""The generator and discriminator of Carracedo-Cosmé & Pérez, as network factories.

Generator (``define_G``): dropout on the input stack; two 3D convolutions (3x3x3 stride 1, then
4x4x4 stride 2) over (height, y, x); the 3D features reshaped into a 2D map (channels x heights) with
LeakyReLU; then a U-Net. The stride-2 3D convolution is the U-Net's outermost downsampling (128 -> 64
px); six 2D blocks (4x4 conv stride 2, batch norm, LeakyReLU 0.2; channels 2, 4, 8, 8, 8, 8 x ngf)
take it to 1 x 1, so the encoder downsamples 7 times. The decoder mirrors it with transposed
convolutions, batch norm, ReLU and dropout on its first three blocks, concatenating the skip
connections, and ends in a transposed convolution at full size into the output head
(:mod:`raypipe.model.heads`): 3 channels with tanh (``rgb``, as published) or 11 palette logits. With
``centres`` in the config, a small branch on the same last features (two 3x3 convolutions of
``CENTRE_WIDTH`` channels, then a transposed convolution at full size) adds one channel after the head's:
the logit of an atom centre at each pixel. With ``counts``, a like branch (``COUNT_WIDTH`` channels) adds one
channel per element after those: the log of a density whose sum is that element's count in the molecule.

Discriminator (``define_D``): PatchGAN on the stack concatenated with the depiction: 4x4 stride-2
convolutions of 1, 2, 4, 8, 8 x ndf channels with batch norm (not on the first) and LeakyReLU 0.2, then a
4x4 convolution to a one-channel patch map (logits).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from raypipe.model.config import ModelConfig
from raypipe.model.files import save_model
from raypipe.model.heads import N_COUNTS, make_head

ENCODER_MULTS = (2, 4, 8, 8, 8, 8)
# memory layout of the 3D stem (weights and input). The stem works at full resolution and is ~80 % of the
# network's work; in channels-last-3d oneDNN runs it about twice as fast on a CPU, with the same values
# (bench/bench_layout.py; test_the_channels_last_stem_computes_what_the_standard_layout_does)
STEM_LAYOUT = torch.channels_last_3d
CENTRE_WIDTH = 32  # channels of the atom-centre branch (config ``centres``)
COUNT_WIDTH = 48  # channels of the count branch (config ``counts``)


class Down(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, norm: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not norm)]
        if norm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(0.2))
        super().__init__(*layers)


class Up(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, dropout: float) -> None:
        layers: list[nn.Module] = [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.ReLU())
        super().__init__(*layers)


class Generator(nn.Module):
    """(B, n_slices, S, S) normalised stack -> (B, C, S, S) head output: an RGB depiction in [-1, 1]
    (``rgb`` head) or per-pixel palette logits (``palette``). ``self.head`` turns it into depictions."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        n_blocks = int(math.log2(config.size)) - 1  # 2D blocks from S/2 down to 1 x 1
        if 2 ** (n_blocks + 1) != config.size or n_blocks < 2:
            raise ValueError(f"size must be a power of two >= 8, got {config.size}")
        self.config = config
        self.head = make_head(config)
        c3 = config.conv3d_channels
        self.input_dropout = nn.Dropout(config.input_dropout)
        self.conv3d = nn.Sequential(
            nn.Conv3d(1, c3, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv3d(c3, c3, 4, 2, 1),
        )
        self.use_stem_layout(STEM_LAYOUT)
        c_stem = c3 * (config.n_slices // 2)
        mults = [ENCODER_MULTS[min(i, len(ENCODER_MULTS) - 1)] for i in range(n_blocks)]
        widths = [c_stem] + [m * config.ngf for m in mults]
        self.down = nn.ModuleList(
            Down(widths[i], widths[i + 1], norm=i < n_blocks - 1) for i in range(n_blocks)  # no norm at 1 x 1
        )
        ups = []
        for i in reversed(range(n_blocks)):  # from the bottleneck back to S/2
            c_in = widths[i + 1] if i == n_blocks - 1 else 2 * widths[i + 1]
            ups.append(Up(c_in, widths[i] if i > 0 else config.ngf,
                          config.decoder_dropout if i >= n_blocks - 3 else 0.0))
        self.up = nn.ModuleList(ups)
        self.out = nn.Sequential(nn.ConvTranspose2d(config.ngf + c_stem, self.head.channels, 4, 2, 1),
                                 self.head.activation())
        self.centres = nn.Sequential(
            nn.Conv2d(config.ngf + c_stem, CENTRE_WIDTH, 3, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(CENTRE_WIDTH, CENTRE_WIDTH, 3, 1, 1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(CENTRE_WIDTH, 1, 4, 2, 1),
        ) if config.centres else None
        self.counts = nn.Sequential(
            nn.Conv2d(config.ngf + c_stem, COUNT_WIDTH, 3, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(COUNT_WIDTH, COUNT_WIDTH, 3, 1, 1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(COUNT_WIDTH, N_COUNTS, 4, 2, 1),
        ) if config.counts else None

    def use_stem_layout(self, layout: torch.memory_format) -> "Generator":
        """The 3D stem's memory layout (``STEM_LAYOUT``; ``torch.contiguous_format``: the standard one).
        Weights and results do not depend on it; model files store weights in the standard layout."""
        self.stem_layout = layout
        self.conv3d.to(memory_format=layout)
        return self

    def save(self, path, *, name: str, notes: dict | None = None, half: bool = True, storage_options=None):
        """Write this generator with its config to a model file (a path or ``s3://``;
        :func:`raypipe.model.files.save_model`)."""
        return save_model(self, self.config, path, name=name, notes=notes, half=half, storage_options=storage_options)

    def forward(self, stack: torch.Tensor) -> torch.Tensor:
        """(B, n_slices, S, S) -> (B, C, S, S): the head's channels, then the atom-centre logit if any."""
        return self.outputs(self.features(stack))

    def outputs(self, features: torch.Tensor) -> torch.Tensor:
        """The output layers on the decoder's last ``features`` (what :meth:`features` returns)."""
        out = [self.out(features)]
        if self.centres is not None:
            out.append(self.centres(features))
        if self.counts is not None:
            out.append(self.counts(features))
        return torch.cat(out, dim=1) if len(out) > 1 else out[0]

    def features(self, stack: torch.Tensor) -> torch.Tensor:
        """The decoder's last features (B, ngf + stem channels, S/2, S/2), before the output layers."""
        x = self.input_dropout(stack).unsqueeze(1).contiguous(memory_format=self.stem_layout)
        x = self.conv3d(x)  # (B, C, D/2, S/2, S/2)
        x = nn.functional.leaky_relu(x.flatten(1, 2), 0.2)  # (B, C * D/2, S/2, S/2)
        skips = [x]
        for block in self.down:
            skips.append(block(skips[-1]))
        y = skips.pop()
        for block in self.up:
            y = torch.cat([block(y), skips.pop()], dim=1)
        return y


class Discriminator(nn.Module):
    """PatchGAN over cat(stack, depiction): (B, n_slices + 3, S, S) -> (B, 1, P, P) logits."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        widths = [config.n_slices + 3] + [m * config.ndf for m in (1, 2, 4, 8, 8)]
        self.body = nn.Sequential(
            *(Down(widths[i], widths[i + 1], norm=i > 0) for i in range(len(widths) - 1)),
            nn.Conv2d(widths[-1], 1, 4, 1, 1),
        )

    def forward(self, stack: torch.Tensor, depiction: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([stack, depiction], dim=1))


def init_weights(module: nn.Module) -> None:
    """pix2pix initialisation: N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales. (The count branch's last
    layer is set by :func:`define_G`.)"""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def define_G(config: ModelConfig) -> Generator:
    net = Generator(config)
    net.apply(init_weights)
    if net.counts is not None:  # start from about one atom of each element: a density of 1 / S^2 a pixel
        nn.init.constant_(net.counts[-1].bias, -2 * math.log(config.size))
    return net


def define_D(config: ModelConfig) -> Discriminator:
    net = Discriminator(config)
    net.apply(init_weights)
    return net


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def flops_per_sample(net: nn.Module, *inputs: torch.Tensor) -> int:
    """Forward FLOPs of one sample (2 x multiply-accumulates), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = net.training
    net.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(*inputs)
    net.train(was_training)
    return int(counter.get_total_flops())
