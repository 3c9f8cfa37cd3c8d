"""Model configuration: one JSON-serialisable object saved beside every checkpoint and model file.

The config owns everything a model file needs to be used again: the grid it was trained on
(``n_slices``, ``size``, ``fov``), the output head, the network widths and the training
hyper-parameters (loss weights, input dropout, learning-rate schedule). Model files store it in their
header (see :mod:`raypipe.model.inference`), so a loaded model tells the pipeline its own input shape.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

HEADS = ("rgb", "palette")
LR_SCHEDULES = ("constant", "cosine", "linear")
TRAINABLE = ("all", "centres", "counts")  # what a training run updates (``TrainConfig.trainable``, ``Pix2Pix``)


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and training hyper-parameters of the pix2pix model.

    ``preset("paper")`` is the published size (64 kernels, channels rising to 512, 128 px input) with
    the published RGB/tanh head and loss (adversarial + 100 x L1); ``preset("small")`` keeps the
    architecture with a quarter of the width, so it trains on CPUs; ``preset("small-palette")`` is the
    small network with the palette head (11 logits per pixel, class-weighted cross-entropy).

    Loss weights: ``lambda_adv`` (adversarial term; 0 trains the generator alone and skips the
    discriminator), ``lambda_l1`` and ``l1_foreground_weight`` (RGB head), ``lambda_ce``,
    ``ce_foreground_weight``, ``focal_gamma`` and ``lambda_dice`` (palette head), ``lambda_centres``
    (the atom-centre output).

    ``centres``: beside the head, a small branch on the decoder's last features predicts, per pixel, the
    probability that a visible atom's centre lies there (one more output channel; trained on Gaussian
    spots at the atoms the true depiction shows). The depiction is unchanged; graph extraction then places
    atoms at the peaks of that map instead of searching the depiction for balls, which a blurred
    depiction (ring carbons merged into a thick ring) hides (:mod:`raypipe.model.heads`).

    ``counts``: another branch on the same features predicts the molecule's formula: a density per element
    whose sum over the pixels is the expected number of its atoms, hidden hydrogens included. Graph
    extraction then chooses the heavy atoms' elements to agree with it (:mod:`raypipe.chem.agreement`),
    and output rows carry its own formula beside the graph's (``formula_counts``).
    """

    n_slices: int = 10
    size: int = 128
    fov: float = 18.0  # Å: the scan window the model was trained on (size pixels across)
    head: str = "rgb"  # "rgb" (3 channels, tanh) or "palette" (background + 10 element logits)
    ngf: int = 64  # generator base width; the U-Net's channels rise to 8 x ngf
    ndf: int = 64  # discriminator base width
    conv3d_channels: int = 64
    input_dropout: float = 0.5
    decoder_dropout: float = 0.5
    lambda_adv: float = 1.0
    lambda_l1: float = 100.0
    l1_foreground_weight: float = 1.0  # weight of molecule pixels in the L1 loss (1 = the paper's plain L1)
    lambda_ce: float = 10.0
    ce_foreground_weight: float = 5.0  # weight of every element class against the background's 1
    focal_gamma: float = 0.0  # 0 = plain cross-entropy; > 0 down-weights pixels already right
    lambda_dice: float = 0.0  # soft Dice over the element classes, added to the cross-entropy
    centres: bool = False  # an atom-centre output beside the head (class docs)
    lambda_centres: float = 1.0  # weight of the atom-centre loss (weighted binary cross-entropy)
    counts: bool = False  # a count output: atoms of each element in the molecule (class docs)
    lambda_counts: float = 1.0  # weight of the count loss (Poisson negative log-likelihood)
    lr: float = 2e-4
    beta1: float = 0.5
    lr_schedule: str = "constant"  # "constant", "cosine" (to lr_min_ratio x lr) or "linear" (pix2pix's decay)
    lr_warmup: int = 0  # steps of linear warm-up
    lr_min_ratio: float = 0.05

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}: use one of {HEADS}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}: use one of {LR_SCHEDULES}")
        if self.n_slices % 2 or self.n_slices < 2:
            raise ValueError(f"n_slices must be even and >= 2 (the 3D stride halves it), got {self.n_slices}")
        if not 0 <= self.input_dropout < 1 or not 0 <= self.decoder_dropout < 1:
            raise ValueError("dropout rates must be in [0, 1)")

    @property
    def pixel(self) -> float:
        """Å per pixel of the model's grid."""
        return self.fov / self.size

    @property
    def window(self):
        """The model's grid as a :class:`raypipe.Window`."""
        from raypipe.window import Window

        return Window(size=self.size, fov=self.fov)

    @classmethod
    def preset(cls, name: str) -> "ModelConfig":
        small = cls(ngf=16, ndf=16, conv3d_channels=16)
        presets = {"paper": cls(), "small": small,
                   "small-palette": replace(small, head="palette", input_dropout=0.1, lambda_adv=0.5)}
        if name not in presets:
            raise ValueError(f"unknown model preset {name!r}: {sorted(presets)}")
        return presets[name]

    def learning_rate(self, step: int, total: int) -> float:
        """The schedule's learning rate at ``step`` of ``total``."""
        warm = min(1.0, (step + 1) / self.lr_warmup) if self.lr_warmup else 1.0
        t = min(max(step - self.lr_warmup, 0) / max(total - self.lr_warmup, 1), 1.0)
        if self.lr_schedule == "cosine":
            factor = self.lr_min_ratio + (1 - self.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        elif self.lr_schedule == "linear":  # pix2pix: constant for the first half, then linearly to the floor
            factor = 1.0 if t < 0.5 else 1.0 - (1 - self.lr_min_ratio) * (t - 0.5) / 0.5
        else:
            factor = 1.0
        return self.lr * warm * factor

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
