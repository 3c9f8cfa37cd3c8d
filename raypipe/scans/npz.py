"""NPZ stacks as the field's tools write them (ED-AFM): ``data`` (H, W, D), ``lengthX``, ``lengthY``.

Slices lie along the last axis; raypipe takes slice 0 as the closest tip-sample distance (pass
``closest="last"`` to ``load_stack`` for files written the other way). ``lengthX``/``lengthY`` (Å)
become the field of view.
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


def read_npz(path: Path, closest: str | None = None) -> ScanStack:
    regular_file(path)
    shape, _ = declared_shape(path)
    if len(shape) != 3:
        raise ScanError(path, f"'data' must be (H, W, D), got shape {shape}")
    check_stack(path, shape[2], shape[0], shape[1])
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "data" not in npz:
                raise ScanError(path, f"NPZ without a 'data' array (has {sorted(npz.files)})")
            data = np.asarray(npz["data"], dtype=np.float32)
            fov = (float(npz["lengthX"]), float(npz["lengthY"])) if {"lengthX", "lengthY"} <= set(npz.files) else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ScanError(path, f"unreadable or truncated NPZ file ({exc})") from exc
    if data.ndim != 3:
        raise ScanError(path, f"'data' must be (H, W, D), got shape {data.shape}")
    images = np.moveaxis(data, -1, 0)
    if closest == "last":
        images = images[::-1]
    metadata = {
        "source": str(path), "format": "npz", "name": path.stem, "fov": fov, "mode": "FM df",
        "order_rule": "slice " + ("-1" if closest == "last" else "0") + " closest",
    }
    return ScanStack(np.ascontiguousarray(images), None, metadata)
