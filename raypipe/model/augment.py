"""Augmentation as in the paper, on batches (CPU or GPU): rotation, shift, zoom, flip and a small
shake applied identically to stack and target; shear on the stack only.

One random affine map per sample is applied with ``affine_grid``/``grid_sample``: bilinear with border
padding for the stack, nearest with black padding for the target (so depiction colours stay exact).
"Shake" moves each slice of the stack by its own sub-pixel offset (drift between images of a real
scan) and moves the target with the stack's mean offset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    rotation: float = 180.0  # degrees, uniform in +-rotation
    shift: float = 0.08  # fraction of the half-width
    zoom: float = 0.1  # scale in [1 - zoom, 1 + zoom]
    flip: bool = True
    shake: float = 0.01  # per-slice shift, fraction of the half-width
    shear: float = 0.05  # stack only, shear factor in +-shear


def _affine(n: int, cfg: AugmentConfig, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    def u(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator, device=device)

    angle = u(-cfg.rotation, cfg.rotation) * math.pi / 180
    scale = 1.0 / u(1 - cfg.zoom, 1 + cfg.zoom)
    flip = torch.where(torch.rand(n, generator=generator, device=device) < 0.5, -1.0, 1.0) if cfg.flip \
        else torch.ones(n, device=device)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta[:, 0, 2], theta[:, 1, 2] = u(-cfg.shift, cfg.shift), u(-cfg.shift, cfg.shift)
    return theta


def augment(stack: torch.Tensor, target: torch.Tensor, cfg: AugmentConfig,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, D, S, S) stack and (B, 3, S, S) target (in [-1, 1]) -> augmented copies."""
    n, depth = stack.shape[:2]
    device = stack.device
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

    target_theta = theta.clone()
    target_theta[:, :, 2] += shake.mean(dim=1)
    grid = F.affine_grid(target_theta, list(target.shape), align_corners=False)
    target_out = F.grid_sample(target + 1, grid, mode="nearest", padding_mode="zeros", align_corners=False) - 1
    return stack_out.reshape(stack.shape), target_out
