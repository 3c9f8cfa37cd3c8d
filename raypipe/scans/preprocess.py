"""Preprocessing a ScanStack into the model's input: (10, 128, 128) float32 by default.

Steps, in order:
1. height resampling to ``n_slices`` images evenly spread over the stack's height range, by linear
   interpolation between neighbouring images (experimental stacks with fewer images are filled in, as
   the paper does); stacks without known heights are taken as evenly spaced;
2. field of view: with a known ``fov`` (metadata, Å) images are rescaled to the window's pixel size
   and centre-cropped or padded (with the stack's median) to the window; with an unknown fov the
   image is padded to a square (median) and resized to the window, so nothing of the scan is lost
   (the scale is then only as good as the scan's framing, docs/formats.md);
3. a 3x3 median filter on every image (light denoising; scipy's, with its "reflect" edges, computed by a
   sorting network: the same values, 1.5-7x faster, ``bench/bench_preprocess.py``);
4. per-stack normalisation to zero mean and unit standard deviation (a flat stack becomes zeros).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.transform import resize

from raypipe.scans.stack import ScanStack
from raypipe.window import DEFAULT_WINDOW, Window

N_SLICES = 10


def resample_heights(images: np.ndarray, heights: np.ndarray | None, n_slices: int = N_SLICES) -> np.ndarray:
    """Linear interpolation of (n, H, W) images onto ``n_slices`` evenly spaced heights."""
    n = images.shape[0]
    h = np.arange(n, dtype=np.float64) if heights is None else np.asarray(heights, dtype=np.float64)
    target = np.linspace(h[0], h[-1], n_slices)
    upper = np.clip(np.searchsorted(h, target, side="right"), 1, n - 1)
    lower = upper - 1
    w = np.clip((target - h[lower]) / np.maximum(h[upper] - h[lower], 1e-12), 0.0, 1.0)
    return ((1 - w)[:, None, None] * images[lower] + w[:, None, None] * images[upper]).astype(np.float32)


def centre_on(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(n, rows, cols): ``images`` centred, cropped where larger, padded with their median where smaller."""
    n, height, width = images.shape
    fill = np.median(images) if height < rows or width < cols else 0.0  # the median only where padding shows
    out = np.full((n, rows, cols), fill, dtype=np.float32)
    src_r, src_c = max((height - rows) // 2, 0), max((width - cols) // 2, 0)
    dst_r, dst_c = max((rows - height) // 2, 0), max((cols - width) // 2, 0)
    h, w = min(height, rows), min(width, cols)
    out[:, dst_r: dst_r + h, dst_c: dst_c + w] = images[:, src_r: src_r + h, src_c: src_c + w]
    return out


def fit_window(images: np.ndarray, fov: tuple[float, float] | None, window: Window) -> np.ndarray:
    """Rescale/crop (n, H, W) images onto the window's grid (see module docs)."""
    n, height, width = images.shape
    if fov is None:
        side = max(height, width)
        return resize(centre_on(images, side, side), (n, window.size, window.size), order=1,
                      anti_aliasing=side > window.size, preserve_range=True).astype(np.float32)
    new_w, new_h = (max(int(round(length / window.pixel)), 1) for length in fov)
    scaled = resize(images, (n, new_h, new_w), order=1, anti_aliasing=new_h < height, preserve_range=True)
    return centre_on(scaled, window.size, window.size)


def preprocess(stack: ScanStack, *, n_slices: int = N_SLICES, window: Window | None = None,
               median: int = 3) -> np.ndarray:
    """Model input for one stack: (n_slices, S, S) float32, closest first (steps in the module docs).

    Parameters: ``stack`` (any :class:`ScanStack`; its ``metadata["fov"]`` in Å, or None for an unknown
    scale); ``n_slices`` and ``window`` (the model's grid: take them from ``model.config``); ``median``
    (the median filter's size, 1 for none). Returns the z-scored float32 array. Raises ValueError for a
    stack with fewer than 2 images (a ScanStack cannot hold one)."""
    window = window or DEFAULT_WINDOW
    images = resample_heights(stack.images, stack.heights, n_slices)
    fov = stack.metadata.get("fov")
    images = fit_window(images, tuple(fov) if fov else None, window)
    return normalise(images, median)


# compare-exchange pairs of a 9-input median network (Paeth; Devillard's opt_med9): position 4 ends as the median
_MEDIAN9 = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8), (4, 7),
            (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))


def median3(images: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.median_filter(images, size=(1, 3, 3))`` (edges: mode "reflect"), value for value,
    by 19 elementwise min/max steps over the 9 shifted neighbours: scipy's rank filter is 1.5x (smooth) to 7x
    (noisy images) slower for this kernel. ``images``: (n, H, W) finite floats."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)), mode="symmetric")  # numpy "symmetric" = scipy "reflect"
    height, width = images.shape[1:]
    v = [padded[:, i: i + height, j: j + width] for i in range(3) for j in range(3)]
    for i, j in _MEDIAN9:
        v[i], v[j] = np.minimum(v[i], v[j]), np.maximum(v[i], v[j])
    return np.ascontiguousarray(v[4])


def normalise(images: np.ndarray, median: int = 3) -> np.ndarray:
    """Steps 3-4 alone, for stacks already on the window (simulated training data): median, z-score."""
    if median == 3:
        images = median3(images)
    elif median > 1:
        images = ndimage.median_filter(images, size=(1, median, median))
    std = float(images.std())
    return ((images - images.mean()) / std if std > 0 else np.zeros_like(images)).astype(np.float32)
