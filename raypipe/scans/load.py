"""``load_stack``: one entry point for every supported scan source."""

from __future__ import annotations

from pathlib import Path

from raypipe.errors import ScanError
from raypipe.scans.archive import HDF5_SUFFIXES, list_archive, read_archive_stack, split_source
from raypipe.scans.images import image_files, read_image_folder
from raypipe.scans.npz import read_npz
from raypipe.scans.quam import is_quam_folder, read_quam_folder
from raypipe.scans.stack import ScanStack
from raypipe.scans.sxm import read_sxm_folder


def load_stack(path: str | Path, *, closest: str | None = None) -> ScanStack:
    """Read one stack from a QUAM-AFM folder, an image folder, an SXM folder, an NPZ file or an
    HDF5 archive (``archive.h5`` holding one stack, or ``archive.h5::scan_id``).

    ``closest``: "first" or "last" overrides which end of a folder/NPZ is the closest image.
    Raises :class:`raypipe.ScanError` naming the path and the problem.
    """
    if closest not in (None, "first", "last"):
        raise ValueError(f"closest must be 'first' or 'last', not {closest!r}")
    archive_source = split_source(str(path))
    if archive_source:
        return read_archive_stack(*archive_source)
    path = Path(path)
    if not path.exists():
        raise ScanError(path, "no such file or folder")
    if path.is_dir():
        if is_quam_folder(path):
            return read_quam_folder(path)
        if any(path.glob("*.sxm")):
            return read_sxm_folder(path, closest)
        if image_files(path):
            return read_image_folder(path, closest)
        raise ScanError(path, "folder holds no scan images (.jpg .png .tif .bmp) or .sxm files")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return read_npz(path, closest)
    if suffix in HDF5_SUFFIXES:
        ids = list_archive(path)
        if len(ids) != 1:
            raise ScanError(path, f"archive holds {len(ids)} stacks: name one as '{path}::<scan_id>'")
        return read_archive_stack(path, ids[0])
    if suffix in (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".sxm"):
        raise ScanError(path, "a single image is not a stack: give the folder of images")
    raise ScanError(path, f"unknown scan format {suffix!r}")
