"""raypipe's HDF5 archive: many stacks in one file.

Layout (h5py):
- root attributes ``format = "raypipe-stacks"``, ``version = 1``;
- group ``stacks``; one dataset per stack, named by its ``scan_id``: (n, H, W) float32, gzip
  compressed, closest image first, with attributes ``heights`` (Å, only where known) and
  ``metadata`` (a JSON object).
Archives are written whole to a temporary file and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import h5py
import numpy as np

from raypipe.errors import ScanError
from raypipe.scans.limits import check_stack, regular_file
from raypipe.scans.stack import ScanStack

FORMAT = "raypipe-stacks"
HDF5_SUFFIXES = (".h5", ".hdf5")


def write_archive(path: str | Path, stacks: Iterable[ScanStack]) -> int:
    """Write ``stacks`` to a new archive at ``path`` (replacing it atomically: a temporary file, then a
    rename); return how many. Each stack is stored under its ``scan_id`` with its heights and metadata."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    count = 0
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"], f.attrs["version"] = FORMAT, 1
            group = f.create_group("stacks")
            for stack in stacks:
                if stack.scan_id in group:
                    raise ValueError(f"duplicate scan_id {stack.scan_id!r}")
                ds = group.create_dataset(stack.scan_id, data=stack.images, compression="gzip", shuffle=True)
                if stack.heights is not None:
                    ds.attrs["heights"] = stack.heights
                ds.attrs["metadata"] = json.dumps(stack.metadata, default=str)
                count += 1
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def _open(path: Path | str, fileobj: BinaryIO | None = None) -> h5py.File:
    """Open an archive by path, or through ``fileobj`` (e.g. an fsspec S3 file; ``path`` names it)."""
    if fileobj is None:
        regular_file(path)
    try:
        f = h5py.File(fileobj if fileobj is not None else path, "r")
    except (OSError, ValueError) as exc:
        raise ScanError(path, f"unreadable or truncated HDF5 file ({exc})") from exc
    if f.attrs.get("format") != FORMAT or not isinstance(f.get("stacks"), h5py.Group):
        f.close()
        raise ScanError(path, f"not a raypipe archive (no format={FORMAT!r} attribute and 'stacks' group)")
    return f


def list_archive(path: str | Path, fileobj: BinaryIO | None = None) -> list[str]:
    """The scan ids in an archive, in file order (only the index is read). Raises ScanError naming the
    file for a file that is not a raypipe archive or cannot be read."""
    with _open(path, fileobj) as f:
        return list(f["stacks"].keys())


def read_archive_stack(path: str | Path, scan_id: str, fileobj: BinaryIO | None = None) -> ScanStack:
    """One stack of an archive, by scan id (only that dataset is read)."""
    name = f"{path}::{scan_id}"
    with _open(path, fileobj) as f:
        if scan_id not in f["stacks"]:
            raise ScanError(path, f"no stack {scan_id!r} in the archive")
        ds = f["stacks"][scan_id]
        if not isinstance(ds, h5py.Dataset):
            raise ScanError(name, "not a stack: a group inside 'stacks', where each entry must be a dataset")
        if len(ds.shape) != 3:
            raise ScanError(name, f"a stack must be (n, H, W), the dataset is {ds.shape}")
        check_stack(name, *ds.shape)  # the declared shape, before anything is read
        try:
            images = np.asarray(ds[()], dtype=np.float32)
            heights = np.asarray(ds.attrs["heights"], dtype=np.float64) if "heights" in ds.attrs else None
            metadata = json.loads(ds.attrs.get("metadata", "{}"))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ScanError(name, f"corrupt dataset ({exc})") from exc
        if not isinstance(metadata, dict):
            raise ScanError(name, "the 'metadata' attribute is not a JSON object")
    metadata["source"] = name
    if "format" in metadata and metadata["format"] != "raypipe-hdf5":
        metadata["origin_format"] = metadata["format"]  # how the stack was made (e.g. ppafm), before archiving
    metadata["format"] = "raypipe-hdf5"  # the reader that read it
    return ScanStack(images, heights, metadata, scan_id=scan_id)


def read_single_stack(path: str | Path, closest: str | None = None) -> ScanStack:
    """The stack of an archive that holds exactly one (``load_stack("file.h5")``)."""
    ids = list_archive(path)
    if len(ids) != 1:
        raise ScanError(path, f"archive holds {len(ids)} stacks: name one as '{path}::<scan_id>'")
    return read_archive_stack(path, ids[0])


def read_archive(path: str | Path) -> Iterator[ScanStack]:
    """Every stack of an archive, one at a time (each read only when reached). Raises ScanError naming
    the file (or ``file::id``) for a corrupt archive or stack."""
    for scan_id in list_archive(path):
        yield read_archive_stack(path, scan_id)
