"""Ball-and-stick depictions: a top view of a 3D molecule on the scan window, QUAM-AFM/Jmol style.

Balls (radius per element, ``elements.ball_radius``) and sticks (one radius, each half in the colour of
its end atom) are drawn with a z-buffer, so lower parts are hidden by higher ones, on a black
background, flat-coloured and without anti-aliasing: every foreground pixel holds exactly one element
colour, which is what makes depictions decodable by :func:`raypipe.extract_graph`.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from typing import TYPE_CHECKING

from raypipe.chem.elements import COLORS, STICK_RADIUS, ball_radius
from raypipe.window import DEFAULT_WINDOW, Window

if TYPE_CHECKING:
    from raypipe.chem.molecule import Molecule


def render_depiction(molecule: Molecule, window: Window | None = None) -> np.ndarray:
    """Render ``molecule`` as an (S, S, 3) uint8 image on ``window`` (default: the project window).

    The top view: balls of 0.3 x the van der Waals radius, sticks half in each end's colour, z-buffered,
    flat colours of :data:`raypipe.chem.elements.COLORS` on black (module docs). Parts outside the window
    are cut. Returns the image; nothing raises for a valid :class:`Molecule`."""
    window = window or DEFAULT_WINDOW
    size, px = window.size, window.pixel
    image = np.zeros((size, size, 3), dtype=np.uint8)
    zbuf = np.full((size, size), -np.inf)
    centres = window.to_pixels(molecule.positions[:, :2])
    heights = molecule.positions[:, 2] / px  # z in pixel units

    stick = STICK_RADIUS / px
    for i, j, _order in molecule.bonds:
        middle = (centres[i] + centres[j]) / 2
        zmid = (heights[i] + heights[j]) / 2
        for a, b, za, zb, element in (
            (centres[i], middle, heights[i], zmid, molecule.elements[i]),
            (centres[j], middle, heights[j], zmid, molecule.elements[j]),
        ):
            _draw_stick(image, zbuf, a, b, za, zb, stick, COLORS[element])
    for (col, row), z, element in zip(centres, heights, molecule.elements):
        _draw_ball(image, zbuf, col, row, z, ball_radius(element) / px, COLORS[element])
    return image


def _box(size: int, cols: np.ndarray, rows: np.ndarray, pad: float) -> tuple[slice, slice] | None:
    c0, c1 = max(int(np.floor(cols.min() - pad)), 0), min(int(np.ceil(cols.max() + pad)) + 1, size)
    r0, r1 = max(int(np.floor(rows.min() - pad)), 0), min(int(np.ceil(rows.max() + pad)) + 1, size)
    if c0 >= c1 or r0 >= r1:
        return None
    return slice(r0, r1), slice(c0, c1)


def _paint(image: np.ndarray, zbuf: np.ndarray, box: tuple[slice, slice], depth: np.ndarray,
           color: tuple[int, int, int]) -> None:
    """Write ``color`` where ``depth`` (NaN outside the primitive) is above the z-buffer."""
    current = zbuf[box]
    front = depth > current  # NaN compares False
    current[front] = depth[front]
    image[box][front] = color


def _draw_ball(image: np.ndarray, zbuf: np.ndarray, col: float, row: float, z: float, radius: float,
               color: tuple[int, int, int]) -> None:
    box = _box(image.shape[0], np.array([col]), np.array([row]), radius)
    if box is None:
        return
    rr, cc = np.mgrid[box]
    d2 = (cc + 0.5 - col) ** 2 + (rr + 0.5 - row) ** 2
    with np.errstate(invalid="ignore"):
        depth = z + np.sqrt(radius**2 - d2)
    _paint(image, zbuf, box, depth, color)


def _draw_stick(image: np.ndarray, zbuf: np.ndarray, a: np.ndarray, b: np.ndarray, za: float, zb: float,
                radius: float, color: tuple[int, int, int]) -> None:
    pts = np.stack([a, b])
    box = _box(image.shape[0], pts[:, 0], pts[:, 1], radius)
    if box is None:
        return
    rr, cc = np.mgrid[box]
    axis = b - a
    length2 = float(axis @ axis)
    pc, pr = cc + 0.5 - a[0], rr + 0.5 - a[1]
    t = np.clip((pc * axis[0] + pr * axis[1]) / length2, 0.0, 1.0) if length2 > 0 else np.zeros_like(pc)
    d2 = (pc - t * axis[0]) ** 2 + (pr - t * axis[1]) ** 2
    with np.errstate(invalid="ignore"):
        depth = za + t * (zb - za) + np.sqrt(radius**2 - d2)
    _paint(image, zbuf, box, depth, color)


def encode_png(image: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG bytes of an (H, W, 3) colour or (H, W) grey uint8 image (lossless, so depictions stay
    decodable); ``compress_level`` 1 is several times faster for photographic images (previews)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=False, compress_level=compress_level)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """(H, W, 3) uint8 image from PNG bytes (grey ones too)."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
