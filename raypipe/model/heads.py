"""Generator output heads: what the generator's last layer predicts, how it becomes a depiction, and the
loss that trains it. A new head is one class here and one entry in ``HEADS``.

- ``rgb`` (the paper's): 3 channels through tanh, an RGB depiction in [-1, 1]; trained with
  ``lambda_l1`` x L1 (molecule pixels optionally weighted by ``l1_foreground_weight``).
- ``palette``: 11 logits per pixel, background + ``raypipe.chem.elements.ELEMENTS``; the depiction is the
  palette colour of the argmax, so it is always crisp (every pixel exactly one element colour or black).
  Trained with class-weighted cross-entropy (``lambda_ce``; every element class weighted
  ``ce_foreground_weight`` against the background's 1, depictions being ~90 % background), optionally
  focal (``focal_gamma``) and a soft Dice term (``lambda_dice``). The discriminator sees the
  softmax-weighted palette image, as pix2pix's sees the generator's RGB.

Every head gives ``image`` (a differentiable RGB in [-1, 1], what the discriminator judges),
``depiction`` (uint8 RGB for extraction), ``margin`` (per-pixel certainty in [0, 1]) and ``combine`` (one
output from the outputs of several views of a stack: test-time augmentation, ``Model.predict``).

The atom-centre output (config ``centres``) is shared by both heads (:class:`Head`): one more channel after
the head's own, the logit of a visible atom's centre at each pixel. Its target is a fourth channel of the
training target, Gaussian spots of ``CENTRE_SIGMA`` pixels at the atoms the true depiction shows
(:func:`raypipe.training.data.centre_targets`), in [-1, 1] like the depiction, so augmentation moves it with
the depiction; its loss is binary cross-entropy with the spots weighted ``CENTRE_WEIGHT`` times (they cover
~1 % of the pixels). Views are combined by their mean probability.

The count output (config ``counts``) follows: one channel per element of ``ELEMENTS``, the log of a density
whose sum over the pixels is the expected number of that element's atoms in the molecule, hydrogens a top
view hides included (the molecule's formula: :meth:`Head.counts`). A density, not one number per stack, so
that the views of a stack map back and combine as the other outputs do (by their mean density) and the
count of a molecule does not depend on where it lies. Its target: the formula's counts as constant planes
after the depiction's (and the centre target's) channels (:func:`raypipe.training.data.decode_targets`),
which augmentation moves unchanged (the planes' maximum is read back: padding is -1); its loss is the
Poisson negative log-likelihood of the counts.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raypipe.chem.elements import ELEMENTS, palette
from raypipe.model.config import ModelConfig

PALETTE = torch.as_tensor(palette() / 127.5 - 1.0)  # (11, 3) in [-1, 1]; index 0 is the black background


def classes_of(target: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) depictions in [-1, 1] -> (B, S, S) class indices (nearest palette colour)."""
    pal = PALETTE.to(target.device, target.dtype)
    distance = ((target.unsqueeze(1) - pal[None, :, :, None, None]) ** 2).sum(dim=2)  # (B, 11, S, S)
    return distance.argmin(dim=1)


CENTRE_SIGMA = 1.0  # pixels: the Gaussian spot at each visible atom's centre in the centre target
CENTRE_WEIGHT = 20.0  # extra weight of the spots' pixels in the centre loss
N_COUNTS = len(ELEMENTS)  # channels of the count output: one per element


def log_counts(densities: torch.Tensor) -> torch.Tensor:
    """(B, len(ELEMENTS), S, S) log densities of the count output -> (B, len(ELEMENTS)) logs of their sums."""
    return densities.flatten(2).logsumexp(dim=-1)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) in [-1, 1] -> (B, S, S, 3) uint8."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class Head:
    """What both heads share: the optional atom-centre channel after the head's own ``channels``. A head
    class implements ``image``, ``depiction``, ``margin`` on its own channels (``own``), ``_combine`` and
    ``_loss``."""

    name = ""
    channels = 0

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    def own(self, output: torch.Tensor) -> torch.Tensor:
        """The head's own channels of a generator output."""
        return output[:, :self.channels]

    def centres(self, output: torch.Tensor) -> torch.Tensor | None:
        """(B, S, S) probability of a visible atom's centre at each pixel, or None (no centre output)."""
        return output[:, self.channels].sigmoid() if self.config.centres else None

    @property
    def count_channels(self) -> slice:
        """Where the count output's channels are in a generator output (module docs)."""
        start = self.channels + int(self.config.centres)
        return slice(start, start + N_COUNTS)

    @property
    def count_targets(self) -> slice:
        """Where the count planes are in a training target: after the depiction and the centre target."""
        start = 3 + int(self.config.centres)
        return slice(start, start + N_COUNTS)

    def counts(self, output: torch.Tensor) -> torch.Tensor | None:
        """(B, len(ELEMENTS)) expected atoms of each element in ``ELEMENTS`` order (the density's sum over the
        pixels), or None (no count output)."""
        if not self.config.counts:
            return None
        return log_counts(output[:, self.count_channels]).exp()

    def combine(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """One output from several views' outputs (each mapped back onto the stack's frame)."""
        combined = [self._combine([self.own(o) for o in outputs])]
        if self.config.centres:
            p = torch.stack([o[:, self.channels:self.channels + 1].sigmoid() for o in outputs]).mean(dim=0)
            combined.append(torch.logit(p.clamp(1e-6, 1 - 1e-6)))
        if self.config.counts:  # the log of the views' mean density
            logs = torch.stack([o[:, self.count_channels] for o in outputs])
            combined.append(logs.logsumexp(dim=0) - float(np.log(len(outputs))))
        return torch.cat(combined, dim=1) if len(combined) > 1 else combined[0]

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The head's loss on the depiction (``target[:, :3]``) plus, with a centre output and a centre
        target (``target[:, 3]``), ``lambda_centres`` x :meth:`centre_loss`, and with a count output and
        its target, ``lambda_counts`` x :meth:`count_loss`."""
        total, parts = self._loss(self.own(output), target[:, :3])
        if self.config.centres and target.shape[1] > 3:
            centre = self.centre_loss(output[:, self.channels], target)
            total = total + self.config.lambda_centres * centre
            parts["loss_G_centres"] = centre.item()
        if self.config.counts and target.shape[1] >= self.count_targets.stop:
            count = self.count_loss(log_counts(output[:, self.count_channels]), target)
            total = total + self.config.lambda_counts * count
            parts["loss_G_counts"] = count.item()
        return total, parts

    def count_loss(self, logs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Poisson negative log-likelihood of the true counts (the maximum of each count plane of the
        target) under the expected counts ``logs`` ((B, len(ELEMENTS)) logs: :func:`log_counts`), mean over
        stacks and elements."""
        truth = target[:, self.count_targets].flatten(2).amax(dim=-1).clamp_min(0)
        return F.poisson_nll_loss(logs, truth, log_input=True, full=False)

    @staticmethod
    def centre_loss(logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of the (B, S, S) centre logit against the centre target (``target[:, 3]``,
        in [-1, 1]), the spots' pixels weighted ``CENTRE_WEIGHT`` times more."""
        spots = (target[:, 3] + 1) / 2
        weight = 1 + CENTRE_WEIGHT * spots
        return (weight * F.binary_cross_entropy_with_logits(logit, spots, reduction="none")).mean()


class RGBHead(Head):
    name = "rgb"
    channels = 3

    def activation(self) -> nn.Module:
        return nn.Tanh()

    def image(self, output: torch.Tensor) -> torch.Tensor:
        return self.own(output)

    def depiction(self, output: torch.Tensor) -> np.ndarray:
        return to_uint8(self.own(output))

    def _combine(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """The mean colour of several views' outputs."""
        return torch.stack(outputs).mean(dim=0)

    def margin(self, output: torch.Tensor) -> torch.Tensor:
        """How far each pixel's colour is from the second-nearest palette colour, relative to the nearest."""
        output = self.own(output)
        pal = PALETTE.to(output.device, output.dtype)
        distance = ((output.unsqueeze(1) - pal[None, :, :, None, None]) ** 2).sum(dim=2).sqrt()
        two = distance.topk(2, dim=1, largest=False).values
        return ((two[:, 1] - two[:, 0]) / two[:, 1].clamp_min(1e-6)).clamp(0, 1)

    def _loss(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``lambda_l1`` x L1; molecule pixels (target not black) weighted by ``l1_foreground_weight``.

        Depictions are ~90 % black background: with a plain L1 a small model trained briefly learns to
        paint everything black. The weighted mean keeps the loss on the plain L1's scale.
        """
        weight = self.config.l1_foreground_weight
        if weight == 1.0:
            l1 = F.l1_loss(output, target)
        else:
            w = 1.0 + (weight - 1.0) * (target > -0.9).any(dim=1, keepdim=True).float()
            l1 = ((output - target).abs() * w).mean() / w.mean()
        return self.config.lambda_l1 * l1, {"loss_G_L1": l1.item()}


class PaletteHead(Head):
    name = "palette"
    channels = len(PALETTE)

    def activation(self) -> nn.Module:
        return nn.Identity()

    def image(self, output: torch.Tensor) -> torch.Tensor:
        """The softmax-weighted palette colour of each pixel, (B, 3, S, S) in [-1, 1]."""
        output = self.own(output)
        return torch.einsum("bkhw,kc->bchw", output.softmax(dim=1), PALETTE.to(output.device, output.dtype))

    def depiction(self, output: torch.Tensor) -> np.ndarray:
        pal = (palette()).astype(np.uint8)
        return pal[self.own(output).argmax(dim=1).cpu().numpy()]

    def _combine(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Logits of the views' mean class probabilities."""
        return torch.stack([o.softmax(dim=1) for o in outputs]).mean(dim=0).clamp_min(1e-12).log()

    def margin(self, output: torch.Tensor) -> torch.Tensor:
        """Per pixel: top-1 minus top-2 class probability."""
        two = self.own(output).softmax(dim=1).topk(2, dim=1).values
        return two[:, 0] - two[:, 1]

    def class_weights(self, device, dtype) -> torch.Tensor:
        w = torch.full((self.channels,), float(self.config.ce_foreground_weight), device=device, dtype=dtype)
        w[0] = 1.0
        return w

    def _loss(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        classes = classes_of(target)
        weights = self.class_weights(output.device, output.dtype)
        log_p = F.log_softmax(output, dim=1)
        nll = F.nll_loss(log_p, classes, reduction="none")  # (B, S, S), unweighted
        w = weights[classes]
        if cfg.focal_gamma:
            p_true = log_p.gather(1, classes.unsqueeze(1)).squeeze(1).exp()
            w = w * (1 - p_true).pow(cfg.focal_gamma)
        ce = (w * nll).sum() / weights[classes].sum()
        total = cfg.lambda_ce * ce
        parts = {"loss_G_CE": ce.item()}
        if cfg.lambda_dice:
            probs = log_p.exp()[:, 1:]
            onehot = F.one_hot(classes, self.channels).permute(0, 3, 1, 2)[:, 1:].to(probs.dtype)
            inter = (probs * onehot).sum(dim=(0, 2, 3))
            union = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
            present = onehot.sum(dim=(0, 2, 3)) > 0
            dice = 1 - ((2 * inter + 1) / (union + 1))[present].mean()
            total = total + cfg.lambda_dice * dice
            parts["loss_G_dice"] = dice.item()
        return total, parts


HEADS = {"rgb": RGBHead, "palette": PaletteHead}


def make_head(config: ModelConfig):
    return HEADS[config.head](config)
