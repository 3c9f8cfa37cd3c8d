"""The scan formats raypipe reads: one table used by ``load_stack`` (one stack from a path) and by the
batch side (``find_units`` lists scan units under a folder or prefix, ``load_source`` reads them).

A new format is one :class:`ScanFormat` entry in ``_formats()`` (its reader in a module of its own):

- ``unit = "file"``: one file is one unit (``suffixes``: the file's); ``multi`` files hold many stacks,
  each addressed as ``file::scan_id`` (``list_ids`` lists them without reading images, ``read_id`` reads one);
- ``unit = "folder"``: a folder of per-image files is one unit (``suffixes``: its members'); ``detect``
  says whether a folder is of this format. Folder formats are tried in table order (QUAM-AFM before a
  plain image folder).

Sources (``file.h5::scan_id``) are parsed in one place, :func:`split_source`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from raypipe.errors import ScanError
from raypipe.scans.stack import ScanStack


@dataclass(frozen=True)
class ScanFormat:
    name: str  # what rows record as ``format``
    unit: str  # "file" or "folder"
    suffixes: tuple[str, ...]
    read: Callable[[Path, str | None], ScanStack]  # (path, closest) -> the stack (for multi: the only one)
    detect: Callable[[Path], bool] | None = None  # folder formats
    multi: bool = False
    list_ids: Callable[[str, BinaryIO | None], list[str]] | None = None
    read_id: Callable[[str, str, BinaryIO | None], ScanStack] | None = None


def _formats() -> list[ScanFormat]:
    from raypipe.scans.archive import HDF5_SUFFIXES, list_archive, read_archive_stack, read_single_stack
    from raypipe.scans.images import IMAGE_SUFFIXES, image_files, read_image_folder
    from raypipe.scans.npz import read_npz
    from raypipe.scans.quam import is_quam_folder, read_quam_folder
    from raypipe.scans.sxm import read_sxm_folder

    return [
        ScanFormat("raypipe-hdf5", "file", HDF5_SUFFIXES, read=read_single_stack, multi=True,
                   list_ids=lambda path, f=None: list_archive(path, f),
                   read_id=lambda path, scan_id, f=None: read_archive_stack(path, scan_id, f)),
        ScanFormat("npz", "file", (".npz",), read=read_npz),
        ScanFormat("quam-afm", "folder", IMAGE_SUFFIXES, read=lambda p, closest=None: read_quam_folder(p),
                   detect=is_quam_folder),
        ScanFormat("nanonis-sxm", "folder", (".sxm",), read=read_sxm_folder,
                   detect=lambda p: any(p.glob("*.sxm"))),
        ScanFormat("image-folder", "folder", IMAGE_SUFFIXES, read=read_image_folder,
                   detect=lambda p: bool(image_files(p))),
    ]


_CACHE: list[ScanFormat] = []


def formats() -> list[ScanFormat]:
    """The format table, built on first use (the readers' modules load then)."""
    if not _CACHE:
        _CACHE.extend(_formats())
    return _CACHE


def file_format(name: str) -> ScanFormat | None:
    """The format of a file by its name (suffix), or None."""
    lower = name.lower()
    return next((f for f in formats() if f.unit == "file" and lower.endswith(f.suffixes)), None)


def member_suffixes() -> tuple[str, ...]:
    """Suffixes of the files that make a folder a scan unit."""
    return tuple(dict.fromkeys(s for f in formats() if f.unit == "folder" for s in f.suffixes))


def folder_format(path: Path) -> ScanFormat | None:
    return next((f for f in formats() if f.unit == "folder" and f.detect(path)), None)


def split_source(source: str) -> tuple[str, str] | None:
    """``archive.h5::scan_id`` -> (archive, scan_id); None for anything else (a folder may be named
    ``a::b``: only a left part that names a multi-stack file makes it an archive source)."""
    file, sep, scan_id = str(source).partition("::")
    while sep:
        found = file_format(file)
        if found is not None and found.multi and scan_id:
            return file, scan_id
        head, sep, scan_id = scan_id.partition("::")
        file = f"{file}::{head}"
    return None


def multi_format(source_file: str) -> ScanFormat:
    found = file_format(source_file)
    if found is None or not found.multi:
        raise ScanError(source_file, "not a file of several stacks")
    return found


def load_stack(path: str | Path, *, closest: str | None = None, fov=None) -> ScanStack:
    """Read one stack from any supported source (the format table; docs/formats.md): a folder
    (QUAM-AFM, Nanonis ``.sxm``, images), an NPZ file, an HDF5 archive holding one stack, or
    ``archive.h5::scan_id``.

    ``closest``: "first" or "last" overrides which end of a folder/NPZ is the closest image; ``fov``: the
    field of view in Å (one number or (x, y)), over anything the file or its sidecar says. A sidecar
    (:mod:`raypipe.scans.sidecar`) beside the stack is applied. Raises :class:`raypipe.ScanError` naming
    the path and the problem.
    """
    from raypipe.scans.sidecar import apply_sidecar

    if closest not in (None, "first", "last"):
        raise ValueError(f"closest must be 'first' or 'last', not {closest!r}")
    source = split_source(str(path))
    if source:
        return apply_sidecar(multi_format(source[0]).read_id(source[0], source[1], None), Path(source[0]), fov)
    path = Path(path)
    if not path.exists():
        raise ScanError(path, "no such file or folder")
    if path.is_dir():
        found = folder_format(path)
        if found is None:
            raise ScanError(path, "folder holds no scan files (" + " ".join(member_suffixes()) + ")")
        return apply_sidecar(found.read(path, closest), path, fov)
    found = file_format(path.name)
    if found is not None:
        return apply_sidecar(found.read(path, closest), path, fov)
    if path.suffix.lower() in member_suffixes():
        raise ScanError(path, "a single image is not a stack: give the folder of images")
    raise ScanError(path, f"unknown scan format {path.suffix.lower()!r}")
