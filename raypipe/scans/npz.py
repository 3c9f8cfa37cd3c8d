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
from raypipe.scans.stack import ScanStack


def read_npz(path: Path, closest: str | None = None) -> ScanStack:
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
