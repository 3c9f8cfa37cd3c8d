"""NPZ stacks as the field's tools write them, in either layout:

- **ppafm** (``ppafm.io.saveNpy``): ``data`` (n_z, n_y, n_x) and ``lvec`` (4, 3: the origin, then the x, y and
  z vectors spanning the grid, Å). The images are the z slices, the lowest tip height closest (a z vector
  pointing down reverses that); heights come from the z vector (spacing = its length / (n_z - 1)); the
  field of view from the x and y vectors; ppafm's rows grow with y, so they are flipped to raypipe's
  top-row-first view;
- **ED-AFM**: ``data`` (H, W, D), ``lengthX``, ``lengthY`` (Å, the field of view); slice 0 closest (pass
  ``closest="last"`` to ``load_stack`` for files written the other way).

A ``data`` array without ``lvec`` whose last axis is longer than its image axes would read as more images
than pixels (the ppafm layout taken for ED-AFM's): it is refused with the reason, never read along the
wrong axes.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from raypipe.errors import ScanError
from raypipe.scans.limits import check_stack, regular_file
from raypipe.scans.stack import ScanStack


def declared_shape(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype of ``data`` from its .npy header inside the zip, without reading it."""
    try:
        with zipfile.ZipFile(path) as z, z.open("data.npy") as f:
            version = np.lib.format.read_magic(f)
            shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                               else np.lib.format.read_array_header_2_0(f))
    except KeyError as exc:
        raise ScanError(path, "NPZ without a 'data' array") from exc
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ScanError(path, f"unreadable or truncated NPZ file ({exc})") from exc
    return shape, dtype


def _names(path: Path) -> set[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return {n.removesuffix(".npy") for n in z.namelist()}
    except (OSError, zipfile.BadZipFile) as exc:
        raise ScanError(path, f"unreadable or truncated NPZ file ({exc})") from exc


def read_npz(path: Path, closest: str | None = None) -> ScanStack:
    regular_file(path)
    shape, _ = declared_shape(path)
    ppafm = "lvec" in _names(path)
    if len(shape) != 3:
        raise ScanError(path, f"'data' must be 3D ((n_z, n_y, n_x) with lvec, or (H, W, D)), got shape {shape}")
    n, rows, cols = shape if ppafm else (shape[2], shape[0], shape[1])
    if not ppafm and n > min(rows, cols):
        raise ScanError(path, f"'data' of shape {tuple(shape)} without 'lvec' would read as {n} images of {rows} x "
                              f"{cols} pixels (ED-AFM's (H, W, D) layout); a ppafm (n_z, n_y, n_x) file needs its "
                              "'lvec'")
    check_stack(path, n, rows, cols)
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = np.asarray(npz["data"], dtype=np.float32)
            lvec = np.asarray(npz["lvec"], dtype=np.float64) if ppafm else None
            fov = (float(npz["lengthX"]), float(npz["lengthY"])) if {"lengthX", "lengthY"} <= set(npz.files) else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise ScanError(path, f"unreadable or truncated NPZ file ({exc})") from exc
    heights = None
    if ppafm:
        if lvec.shape != (4, 3):
            raise ScanError(path, f"'lvec' must be (4, 3) (origin and the x, y, z vectors), got {lvec.shape}")
        images = data[:, ::-1, :]  # ppafm's rows grow with y; raypipe's first row is the top
        dz = float(lvec[3, 2]) / max(n - 1, 1)
        if dz < 0:  # the z vector points down: the last slice is the lowest
            images, dz = images[::-1], -dz
        heights = np.arange(n) * dz if dz > 0 else None
        fov = (float(np.linalg.norm(lvec[1])), float(np.linalg.norm(lvec[2])))
        rule = "ppafm lvec: lowest tip height closest"
    else:
        images = np.moveaxis(data, -1, 0)
        rule = "slice 0 closest"
    if closest == "last":
        images = images[::-1]
        heights = None if heights is None else heights[-1] - heights[::-1]
        rule += ", reversed (closest='last')"
    metadata = {"source": str(path), "format": "npz", "layout": "ppafm" if ppafm else "ed-afm", "name": path.stem,
                "fov": list(fov) if fov else None, "mode": "FM df", "order_rule": rule}
    return ScanStack(np.ascontiguousarray(images), heights, metadata)
