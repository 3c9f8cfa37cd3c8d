"""Scan units under a folder or ``s3://`` prefix: what batch labelling reads, and how.

A unit is one file or folder that holds one or more stacks, by the format table of
:mod:`raypipe.scans.formats`:
- a file of a file format: an HDF5 archive (``.h5``/``.hdf5``, many stacks, listed without reading their
  images) or an NPZ file (one stack);
- a folder holding member files of a folder format (images .jpg .jpeg .png .tif .tiff .bmp, or ``.sxm``):
  one stack (QUAM-AFM stack folders included); QUAM-AFM's truth folders ``JMOL_IMAGES`` and ``XYZ_FILES``
  are not scans.
Other files are ignored and counted. Each unit has a fingerprint (sizes and modification times or
ETags of its files), so a changed unit is labelled again.
"""

from __future__ import annotations

import hashlib
import posixpath
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from raypipe.scans.formats import file_format, load_stack, member_suffixes, multi_format, split_source
from raypipe.scans.sidecar import NAMES as SIDECARS
from raypipe.scans.stack import ScanStack
from raypipe.storage import StorageOptions, filesystem, is_remote, redact

NOT_SCANS = ("JMOL_IMAGES", "XYZ_FILES")


@dataclass(frozen=True)
class ScanUnit:
    uri: str  # local path or s3://bucket/key of the file or folder
    kind: str  # a file format's name ("raypipe-hdf5", "npz") or "folder"
    fingerprint: str
    newest: float = 0.0  # modification time of its newest file (epoch s): a unit still arriving is younger
    sidecar: bool = False  # a sidecar (raypipe.json) lies in the folder or beside the file

    @property
    def multi(self) -> bool:
        """Whether the unit is a file of several stacks (its sources are ``file::scan_id``)."""
        found = file_format(self.uri) if self.kind != "folder" else None
        return bool(found and found.multi)


def find_units(uri: str, storage_options: StorageOptions = None) -> tuple[list[ScanUnit], int]:
    """The scan units under ``uri`` (sorted) and how many files were ignored.

    The listing streams folder by folder (``fs.walk``): memory holds one folder's file list at a time and
    one small record per unit, whatever the size of the archive. Raises FileNotFoundError for a missing
    path or prefix.
    """
    fs, root = filesystem(uri, storage_options)
    fs.invalidate_cache()
    if not fs.exists(root):
        raise FileNotFoundError(f"{redact(uri)}: no such file, folder or prefix")
    scheme = "s3://" if is_remote(uri) else ""
    if fs.isfile(root):
        listing = [(posixpath.dirname(root), {posixpath.basename(root): fs.info(root)})]
    else:
        listing = ((folder, files) for folder, _, files in fs.walk(root, detail=True))
    units, ignored = [], 0
    members = member_suffixes()
    for folder, files in listing:
        inside_truth = any(p in NOT_SCANS for p in folder.split("/"))
        infos, sidecar = [], None
        by_name = {posixpath.basename(n): info for n, info in files.items()}
        for name, info in sorted(files.items()):
            name = posixpath.basename(name)
            path = posixpath.join(folder, name)
            found = file_format(name)
            own = by_name.get(f"{name}.raypipe.json") if found is not None and not inside_truth else None
            if name in SIDECARS and not inside_truth:  # part of its folder's unit: a change relabels the stack
                sidecar = info
            elif name.endswith(".raypipe.json") and not inside_truth and file_format(name[:-len(".raypipe.json")]):
                continue  # a file's own sidecar: part of that file's unit (below)
            elif inside_truth or name.startswith("."):
                ignored += 1
            elif found is not None:  # with its own sidecar, if any: a change to it relabels the stack too
                parts = [info] + ([own] if own is not None else [])
                units.append(ScanUnit(scheme + path, found.name, _fingerprint(parts), _newest(parts), own is not None))
            elif posixpath.splitext(name)[1].lower() in members:
                infos.append(info)
            else:
                ignored += 1
        if infos:
            infos += [sidecar] if sidecar else []
            units.append(ScanUnit(scheme + folder, "folder", _fingerprint(infos), _newest(infos), sidecar is not None))
        elif sidecar is not None:
            ignored += 1  # a sidecar without scans beside it
    return sorted(units, key=lambda u: u.uri), ignored


def _newest(infos: list[dict]) -> float:
    times = []
    for info in infos:
        value = info.get("mtime") or info.get("LastModified")
        if hasattr(value, "timestamp"):
            value = value.timestamp()
        if value is not None:
            times.append(float(value))
    return max(times, default=0.0)


def _fingerprint(infos: list[dict]) -> str:
    text = "|".join(f"{i['name']}:{i.get('size')}:{i.get('ETag') or i.get('mtime') or i.get('LastModified')}"
                    for i in sorted(infos, key=lambda i: i["name"]))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def unit_sources(unit: ScanUnit, storage_options: StorageOptions = None) -> list[str]:
    """The stacks of a unit as sources for :func:`load_source`: ``file.h5::scan_id`` or the unit itself."""
    if not unit.multi:
        return [unit.uri]
    fs, path = filesystem(unit.uri, storage_options)
    with fs.open(path, "rb") as f:
        return [f"{unit.uri}::{scan_id}" for scan_id in multi_format(unit.uri).list_ids(unit.uri, f)]


def load_source(source: str, storage_options: StorageOptions = None, fov=None) -> ScanStack:
    """One stack from a source of :func:`unit_sources` (local or S3; from S3 only what is needed is read);
    ``fov``: the field of view in Å over what the file or sidecar says."""
    if not is_remote(source):
        return load_stack(source, fov=fov)
    archive_source = split_source(source)
    if archive_source:
        file, scan_id = archive_source
        fs, path = filesystem(file, storage_options)
        with fs.open(path, "rb") as f:
            stack = multi_format(file).read_id(file, scan_id, f)
        if fov is not None:
            from raypipe.scans.sidecar import apply_sidecar

            stack = apply_sidecar(stack, None, fov)
    else:
        fs, path = filesystem(source, storage_options)
        tmp = Path(tempfile.mkdtemp(prefix="raypipe-scan-"))
        try:
            local = tmp / posixpath.basename(path)
            fs.get(path, str(local), recursive=fs.isdir(path))
            stack = load_stack(local, fov=fov)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    stack.metadata["source"] = source
    return stack

