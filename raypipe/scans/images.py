"""Folders of exported images (jpg/png/tif, 8 or 16 bit, grey or RGB), one folder = one stack.

Ordering rule (recorded as ``metadata["order_rule"]``):
- if every file name carries a height — ``z058``, ``100pm``, ``-180pm`` — images are sorted by it
  and the *smallest* height is taken as the closest (heights are tip offsets: lower = closer);
  heights become ``ScanStack.heights`` in Å relative to the closest (pm values / 100, ``z`` values
  as given, assumed pm);
- otherwise the last integer in each name (``image_0``, ``BrITP-1``) orders them, and the *first*
  (smallest index) is the closest, as the field's exports number them.
``closest="last"`` reverses either rule. Images of slightly different sizes are centre-cropped to the
common size (``metadata["size_adjust"]``). Colour images are converted to grey (luminance).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from raypipe.errors import ScanError
from raypipe.scans.limits import check_image, check_stack, regular_file
from raypipe.scans.stack import ScanStack

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
_PM = re.compile(r"(-?\d+(?:\.\d+)?)\s*pm", re.IGNORECASE)
_Z = re.compile(r"(?:^|[^a-z])z(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_INDEX = re.compile(r"(\d+)(?!.*\d)")


def image_files(folder: Path) -> list[Path]:
    """The image files of a folder by suffix (FIFOs and devices too: the readers refuse them by name)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header, without decoding; checked against the limits."""
    regular_file(path)
    try:
        with Image.open(path) as im:
            width, height = im.size
    except UnidentifiedImageError:
        raise ScanError(path, "not an image: no image format recognised in its bytes (a misnamed file?)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ScanError(path, f"unreadable or truncated image ({exc})") from exc
    check_image(path, width, height)
    return width, height


def read_image(path: Path) -> np.ndarray:
    """One image as a 2D float32 array (grey; colour converted by luminance)."""
    image_size(path)
    try:
        with Image.open(path) as im:
            im.load()
            array = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ScanError(path, f"unreadable or truncated image ({exc})") from exc
    array = array.astype(np.float32)
    if array.ndim == 3:
        array = array[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32) if array.shape[2] >= 3 \
            else array[..., 0]
    if array.ndim != 2:
        raise ScanError(path, f"not a 2D image (shape {array.shape})")
    return array


def file_height(name: str) -> float | None:
    """Height offset in Å parsed from a file name, or None."""
    stem = Path(name).stem
    match = _PM.search(stem) or _Z.search(stem)
    return float(match.group(1)) / 100.0 if match else None


def order_files(files: list[Path], closest: str | None = None) -> tuple[list[Path], np.ndarray | None, str]:
    """Sort files closest first; return them, relative heights (Å) or None, and the rule applied."""
    heights = [file_height(f.name) for f in files]
    if all(h is not None for h in heights) and len(set(heights)) == len(heights):
        pairs = sorted(zip(heights, files), reverse=closest == "last")
        rule = "height in file name, " + ("largest" if closest == "last" else "smallest") + " closest"
        hs = np.array([h for h, _ in pairs])
        return [f for _, f in pairs], np.abs(hs - hs[0]), rule
    indices = []
    for f in files:
        match = _INDEX.search(f.stem)
        if match is None:
            raise ScanError(f, "file name has neither a height (z058, -180pm) nor an index (image_3)")
        indices.append(int(match.group(1)))
    if len(set(indices)) != len(indices):
        raise ScanError(files[0].parent, f"image indices repeat: {sorted(indices)}")
    pairs = sorted(zip(indices, files), reverse=closest == "last")
    rule = "index in file name, " + ("last" if closest == "last" else "first") + " closest"
    return [f for _, f in pairs], None, rule


def crop_common(images: list[np.ndarray]) -> tuple[np.ndarray, str | None]:
    """Centre-crop images to their common size; say what was done (None when nothing was)."""
    shapes = {im.shape for im in images}
    if len(shapes) == 1:
        return np.stack(images), None
    h = min(s[0] for s in shapes)
    w = min(s[1] for s in shapes)
    out = []
    for im in images:
        top, left = (im.shape[0] - h) // 2, (im.shape[1] - w) // 2
        out.append(im[top: top + h, left: left + w])
    return np.stack(out), f"centre-cropped sizes {sorted(shapes)} to {(h, w)}"


def read_image_folder(folder: Path, closest: str | None = None) -> ScanStack:
    files = image_files(folder)
    if len(files) < 2:
        for f in files:  # a lone file that is no image at all says so first
            image_size(f)
        raise ScanError(folder, f"an image stack needs at least 2 images, found {len(files)}")
    files, heights, rule = order_files(files, closest)
    sizes = [image_size(f) for f in files]  # every header checked before any image is decoded
    check_stack(folder, len(files), max(h for _, h in sizes), max(w for w, _ in sizes))
    images, adjust = crop_common([read_image(f) for f in files])
    metadata = {
        "source": str(folder), "format": "image-folder", "name": folder.name, "fov": None,
        "mode": "unknown", "files": [f.name for f in files], "order_rule": rule,
    }
    if adjust:
        metadata["size_adjust"] = adjust
    return ScanStack(images, heights, metadata)
