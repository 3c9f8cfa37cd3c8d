"""Augmentation on batches (CPU or GPU): the paper's geometric recipe plus what makes simulations look
like experiments (after ED-AFM's), applied to raw (z-scored) simulated stacks before the model's own
preprocessing (3 x 3 median, z-score), as :func:`raypipe.preprocess` does to a real scan.

In order, per sample (each with its own random draws, deterministic in the ``generator``):

1. **fewer images** (``few_slices_p``): the stack is cut to 3-6 of its slices (evenly spaced, both ends
   kept) and linearly interpolated back to ``n_slices`` — what ``preprocess`` does to a short real stack;
2. **symmetries** (``symmetries``): one of the 8 symmetries of the square (a quarter turn 0-3 times, then
   a mirror or not), drawn uniformly per sample, exact (a permutation of pixels), on stack and target
   together — a constant-height scan has no preferred orientation;
3. **geometry**, one affine map applied identically to stack and target: rotation, shift, flip and a
   log-uniform zoom in ``[zoom_min, zoom_max]`` (exported images are of unknown scale), plus per-slice
   **drift** (``shake``, each slice moved by its own offset; the target by their mean) and **shear**
   (stack only). Bilinear with border padding for the stack, nearest with black padding for the target,
   so the depiction's colours stay exact and stack and target stay aligned;
4. **contrast/gamma** (``gamma``: exponent log-uniform in ``exp(+-gamma)`` on the min-max scaled stack);
5. **background gradient** (``gradient``: a random plane of up to that fraction of the stack's range);
6. **noise** (``noise``: per slice, Gaussian of a random standard deviation up to that fraction of the
   slice's range);
7. **cutout** (``cutout``: up to that many rectangles of up to ``cutout_size`` of the width filled with
   the slice's mean; stack only);
8. **8-bit quantisation** (``quantize_p``: real exports are 8-bit images);
9. the model's preprocessing: 3 x 3 median and per-stack z-score (:func:`finish`).

``AugmentConfig.off()`` leaves only step 9 (validation).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    rotation: float = 180.0  # degrees, uniform in +-rotation
    shift: float = 0.08  # fraction of the half-width
    zoom_min: float = 0.9  # scale, log-uniform in [zoom_min, zoom_max]
    zoom_max: float = 1.1
    flip: bool = True
    symmetries: bool = False  # one of the 8 exact symmetries of the square per sample (step 2)
    shake: float = 0.01  # per-slice drift, fraction of the half-width
    shear: float = 0.05  # stack only, shear factor in +-shear
    few_slices_p: float = 0.0  # probability of a stack rebuilt from 3-6 of its slices
    gamma: float = 0.0  # contrast: exponent in exp(+-gamma)
    gradient: float = 0.0  # background plane amplitude, fraction of the range
    noise: float = 0.0  # per-slice Gaussian noise, std up to this fraction of the slice's range
    cutout: int = 0  # up to this many rectangles per slice
    cutout_size: float = 0.12  # fraction of the width
    quantize_p: float = 0.0  # probability of 8-bit quantisation
    median: int = 3  # the model's preprocessing: median filter size (1 = none)

    def __post_init__(self) -> None:
        if not 0 < self.zoom_min <= self.zoom_max:
            raise ValueError(f"zoom range [{self.zoom_min}, {self.zoom_max}] must be positive and ordered")
        for name in ("few_slices_p", "quantize_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")
        if self.median < 1 or self.median % 2 == 0:
            raise ValueError(f"median must be an odd size >= 1, got {self.median}")

    @classmethod
    def from_dict(cls, data: dict | None) -> "AugmentConfig":
        """From a config file's ``augment`` mapping: unknown keys are an error (checked on the driver)."""
        data = dict(data or {})
        preset = data.pop("preset", None)
        base = cls.experimental() if preset == "experimental" else cls()
        if preset not in (None, "experimental", "paper"):
            raise ValueError(f"unknown augment preset {preset!r}: use 'paper' or 'experimental'")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown augment keys {unknown}; known: {sorted(known)}")
        return replace(base, **data)

    @classmethod
    def experimental(cls) -> "AugmentConfig":
        """The shipped model's recipe: the paper's geometry plus experiment-like degradations."""
        return cls(zoom_min=0.8, zoom_max=1.25, shake=0.02, few_slices_p=0.3, gamma=0.3, gradient=0.2,
                   noise=0.06, cutout=2, quantize_p=0.5)

    @classmethod
    def off(cls) -> "AugmentConfig":
        return cls(rotation=0.0, shift=0.0, zoom_min=1.0, zoom_max=1.0, flip=False, shake=0.0, shear=0.0)

    def to_dict(self) -> dict:
        return asdict(self)


def _uniform(n: int, low: float, high: float, generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def _affine(n: int, cfg: AugmentConfig, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    angle = _uniform(n, -cfg.rotation, cfg.rotation, generator, device) * math.pi / 180
    zoom = torch.exp(_uniform(n, math.log(cfg.zoom_min), math.log(cfg.zoom_max), generator, device))
    scale = 1.0 / zoom  # affine_grid maps output to input coordinates
    flip = torch.where(torch.rand(n, generator=generator, device=device) < 0.5, -1.0, 1.0) if cfg.flip \
        else torch.ones(n, device=device)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta[:, 0, 2] = _uniform(n, -cfg.shift, cfg.shift, generator, device)
    theta[:, 1, 2] = _uniform(n, -cfg.shift, cfg.shift, generator, device)
    return theta


def symmetry(x: torch.Tensor, k: torch.Tensor, mirror: torch.Tensor) -> torch.Tensor:
    """(B, ..., S, S) with sample b turned a quarter turn ``k[b]`` times, then mirrored (transposed) where
    ``mirror[b]``: the 8 symmetries of the square, exact.

    Examples:
        >>> import torch
        >>> x = torch.arange(4.0).reshape(1, 1, 2, 2)
        >>> symmetry(x, torch.tensor([1]), torch.tensor([False])).flatten().tolist()
        [1.0, 3.0, 0.0, 2.0]
        >>> symmetry(x, torch.tensor([0]), torch.tensor([True])).flatten().tolist()
        [0.0, 2.0, 1.0, 3.0]
    """
    out = torch.empty_like(x)
    for b in range(len(x)):
        y = torch.rot90(x[b], int(k[b]), dims=(-2, -1))
        out[b] = y.transpose(-2, -1) if bool(mirror[b]) else y
    return out


def few_slices(stack: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, D, S, S) stacks rebuilt from ``keep[b]`` evenly spaced slices each (both ends kept), linearly
    interpolated back to D slices — as :func:`raypipe.scans.preprocess.resample_heights` fills a short stack."""
    n, depth = stack.shape[:2]
    out = stack.clone()
    for b in range(n):
        k = int(keep[b])
        if k >= depth:
            continue
        src = torch.linspace(0, depth - 1, k, device=stack.device).round().long()  # kept slice indices
        sub = stack[b, src]  # (k, S, S), at positions 0..k-1 of the short stack
        pos = torch.linspace(0, k - 1, depth, device=stack.device)
        lower = pos.floor().long().clamp(max=k - 2)
        w = (pos - lower).view(-1, 1, 1)
        out[b] = (1 - w) * sub[lower] + w * sub[lower + 1]
    return out


_MED9 = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8), (4, 7),
         (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))  # a median-of-9 exchange network (Paeth)


def median_filter(stack: torch.Tensor, size: int = 3) -> torch.Tensor:
    """Per-slice ``size`` x ``size`` median of (B, D, S, S), edges replicated (scipy's ``reflect`` for 3 x 3)."""
    if size <= 1:
        return stack
    n, depth, h, w = stack.shape
    pad = size // 2
    x = F.pad(stack.reshape(n * depth, 1, h, w), (pad, pad, pad, pad), mode="replicate")
    if size == 3:  # min/max exchanges over the 9 shifted images: ~10x faster than a sort on CPU
        p = [x[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)]
        for a, b in _MED9:
            p[a], p[b] = torch.minimum(p[a], p[b]), torch.maximum(p[a], p[b])
        return p[4].reshape(n, depth, h, w)
    patches = F.unfold(x, size)  # (N, size^2, h * w)
    return patches.median(dim=1).values.reshape(n, depth, h, w)


def zscore(stack: torch.Tensor) -> torch.Tensor:
    """Per-stack zero mean, unit standard deviation (a flat stack becomes zeros)."""
    mean = stack.mean(dim=(1, 2, 3), keepdim=True)
    std = stack.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
    return torch.where(std > 0, (stack - mean) / std.clamp_min(1e-12), torch.zeros_like(stack))


def finish(stack: torch.Tensor, median: int = 3) -> torch.Tensor:
    """The model's own preprocessing of an (augmented) stack: median, then z-score."""
    return zscore(median_filter(stack, median))


def _photometric(stack: torch.Tensor, cfg: AugmentConfig, generator, device) -> torch.Tensor:
    n, depth, h, w = stack.shape
    lo = stack.amin(dim=(1, 2, 3), keepdim=True)
    span = (stack.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-6)
    x = (stack - lo) / span  # [0, 1] per stack
    if cfg.gamma:
        g = torch.exp(_uniform(n, -cfg.gamma, cfg.gamma, generator, device)).view(n, 1, 1, 1)
        x = x.clamp(0, 1).pow(g)
    if cfg.gradient:
        angle = _uniform(n, 0, 2 * math.pi, generator, device).view(n, 1, 1, 1)
        amp = _uniform(n, 0, cfg.gradient, generator, device).view(n, 1, 1, 1)
        yy, xx = torch.meshgrid(torch.linspace(-0.5, 0.5, h, device=device),
                                torch.linspace(-0.5, 0.5, w, device=device), indexing="ij")
        x = x + amp * (torch.cos(angle) * xx + torch.sin(angle) * yy)
    if cfg.noise:
        slice_span = (x.amax(dim=(2, 3), keepdim=True) - x.amin(dim=(2, 3), keepdim=True)).clamp_min(1e-6)
        sigma = torch.rand(n, depth, 1, 1, generator=generator, device=device) * cfg.noise * slice_span
        x = x + sigma * torch.randn(x.shape, generator=generator, device=device)
    if cfg.cutout:
        size = max(1, int(cfg.cutout_size * w))
        holes = torch.randint(0, cfg.cutout + 1, (n, depth), generator=generator, device=device)
        for b, d in zip(*torch.nonzero(holes, as_tuple=True)):
            for _ in range(int(holes[b, d])):
                hh, ww = (int(v) for v in torch.randint(1, size + 1, (2,), generator=generator, device=device))
                r = int(torch.randint(0, h - hh + 1, (1,), generator=generator, device=device))
                c = int(torch.randint(0, w - ww + 1, (1,), generator=generator, device=device))
                x[b, d, r:r + hh, c:c + ww] = x[b, d].mean()
    if cfg.quantize_p:
        q = torch.rand(n, generator=generator, device=device) < cfg.quantize_p
        if q.any():
            lo2 = x[q].amin(dim=(1, 2, 3), keepdim=True)
            span2 = (x[q].amax(dim=(1, 2, 3), keepdim=True) - lo2).clamp_min(1e-6)
            x[q] = torch.round((x[q] - lo2) / span2 * 255) / 255
    return x


def augment(stack: torch.Tensor, target: torch.Tensor, cfg: AugmentConfig,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, D, S, S) raw stacks and (B, 3, S, S) target depictions (in [-1, 1]) -> augmented,
    preprocessed model inputs and their aligned targets (module docs)."""
    n, depth = stack.shape[:2]
    device = stack.device
    if cfg.few_slices_p:
        short = torch.rand(n, generator=generator, device=device) < cfg.few_slices_p
        keep = torch.where(short, torch.randint(3, 7, (n,), generator=generator, device=device),
                           torch.full((n,), depth, device=device))
        stack = few_slices(stack, keep)

    if cfg.symmetries:
        k = torch.randint(0, 4, (n,), generator=generator, device=device)
        mirror = torch.rand(n, generator=generator, device=device) < 0.5
        stack, target = symmetry(stack, k, mirror), symmetry(target, k, mirror)

    theta = _affine(n, cfg, generator, device)
    shake = cfg.shake * (2 * torch.rand(n, depth, 2, generator=generator, device=device) - 1)
    shear = torch.eye(2, device=device).repeat(n, 1, 1)
    shear[:, 0, 1] = cfg.shear * (2 * torch.rand(n, generator=generator, device=device) - 1)

    stack_theta = theta.clone()
    stack_theta[:, :, :2] = theta[:, :, :2] @ shear
    slices_theta = stack_theta.repeat_interleave(depth, dim=0)
    slices_theta[:, :, 2] += shake.reshape(-1, 2)
    slices = stack.reshape(n * depth, 1, *stack.shape[2:])
    grid = F.affine_grid(slices_theta, list(slices.shape), align_corners=False)
    stack_out = F.grid_sample(slices, grid, mode="bilinear", padding_mode="border", align_corners=False)
    stack_out = stack_out.reshape(stack.shape)

    target_theta = theta.clone()
    target_theta[:, :, 2] += shake.mean(dim=1)
    grid = F.affine_grid(target_theta, list(target.shape), align_corners=False)
    target_out = F.grid_sample(target + 1, grid, mode="nearest", padding_mode="zeros", align_corners=False) - 1

    if cfg.gamma or cfg.gradient or cfg.noise or cfg.cutout or cfg.quantize_p:
        stack_out = _photometric(stack_out, cfg, generator, device)
    return finish(stack_out, cfg.median), target_out
