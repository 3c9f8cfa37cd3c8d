"""Model configuration: one JSON-serialisable object saved beside every checkpoint and model file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and training hyper-parameters of the pix2pix model.

    ``preset("paper")`` is the published size (64 kernels, channels rising to 512, 128 px input);
    ``preset("small")`` keeps the architecture with a quarter of the width, so it trains on CPUs.
    """

    n_slices: int = 10
    size: int = 128
    ngf: int = 64  # generator base width; the U-Net's channels rise to 8 x ngf
    ndf: int = 64  # discriminator base width
    conv3d_channels: int = 64
    input_dropout: float = 0.5
    decoder_dropout: float = 0.5
    lambda_l1: float = 100.0
    l1_foreground_weight: float = 1.0  # weight of molecule pixels in the L1 loss (1 = the paper's plain L1)
    lr: float = 2e-4
    beta1: float = 0.5

    @classmethod
    def preset(cls, name: str) -> "ModelConfig":
        presets = {"paper": cls(), "small": cls(ngf=16, ndf=16, conv3d_channels=16)}
        if name not in presets:
            raise ValueError(f"unknown model preset {name!r}: {sorted(presets)}")
        return presets[name]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
