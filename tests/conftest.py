"""Shared fixtures: scan files written by the tests, and the optional real stacks in ../shared/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

EXPERIMENTAL = Path(__file__).resolve().parents[1].parent / "shared" / "experimental"


def synthetic_stack(n: int = 10, size: int = 64, seed: int = 0) -> np.ndarray:
    """(n, size, size) float32: blobs whose contrast grows towards the closest image (index 0)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    base = np.zeros((size, size))
    for _ in range(6):
        cy, cx = rng.uniform(0.2 * size, 0.8 * size, 2)
        base += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 16) ** 2))
    return np.stack([base * (1.0 - 0.08 * k) for k in range(n)]).astype(np.float32)


def save_grey(path: Path, image: np.ndarray, bits: int = 8) -> None:
    scaled = (image - image.min()) / max(float(np.ptp(image)), 1e-9)
    if bits == 16:
        Image.fromarray((scaled * 65535).astype(np.uint16)).save(path)
    else:
        Image.fromarray((scaled * 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="session")
def experimental() -> Path:
    if not EXPERIMENTAL.is_dir():
        pytest.skip(f"real stacks not available ({EXPERIMENTAL} is absent outside the developers' checkout)")
    return EXPERIMENTAL
