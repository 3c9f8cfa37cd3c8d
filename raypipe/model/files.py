"""Model files without torch: where a model file is (the shipped one, a path, an ``s3://`` object
fetched once into a local cache), its checked safetensors header, config and tag.

The labelling driver plans a run from these (the grid, the calibration, the tag) and never imports torch:
only the inference actors load weights (:mod:`raypipe.model.inference`). Importing torch costs a process
~320 MiB (measured, proportional set size), which the nightly job's driver no longer pays.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from safetensors import safe_open

from raypipe.model.config import ModelConfig
from raypipe.storage import StorageOptions, filesystem, is_remote, redact, write_bytes_atomic

# 1: no head in the config (the RGB head); 2: the config has the grid and the head; 3: the config may add an
# atom-centre output (``centres``), whose weights an older raypipe would not expect
FORMAT_VERSION = 3
SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "models" / "raypipe-small.safetensors"


def local_model_file(path: str | Path | None, storage_options: StorageOptions = None) -> Path:
    """A local file holding the model at ``path`` (None: the shipped model); an ``s3://`` model is fetched
    into ``$TMPDIR/raypipe-models/`` once per version of the object. FileNotFoundError when absent."""
    if path is None or str(path) == "":
        return SHIPPED_MODEL
    if not is_remote(path):
        local = Path(path)
        if not local.is_file():
            raise FileNotFoundError(f"{path}: no such model file")
        return local
    fs, where = filesystem(str(path), storage_options)
    try:
        info = fs.info(where)
    except FileNotFoundError:
        raise FileNotFoundError(f"{redact(str(path))}: no such model file") from None
    version = f"{info.get('ETag', '')}{info.get('size', '')}{info.get('LastModified', '')}"
    key = hashlib.sha256(f"{path}|{version}".encode()).hexdigest()[:24]
    cache = Path(tempfile.gettempdir()) / "raypipe-models" / f"{key}.safetensors"
    if not cache.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        local_fs, local_path = filesystem(str(cache))
        write_bytes_atomic(local_fs, local_path, fs.cat_file(where))
    return cache


def model_tag(path: str | Path | None = None, storage_options: StorageOptions = None) -> str:
    """``name@hash12`` of a model file (default: the shipped model) without loading its weights."""
    path = local_model_file(path, storage_options)
    metadata = read_header(path)
    return f"{metadata.get('name', path.stem)}@{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


def read_header(path: str | Path) -> dict:
    """A model file's safetensors header (metadata), checked: a raypipe model of a known format version."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"{path}: not a safetensors model file ({exc})") from exc
    if metadata.get("format") != "raypipe-model":
        raise ValueError(f"{path}: not a raypipe model file (no format=raypipe-model in its header)")
    version = int(metadata.get("format_version", "1"))
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: model format version {version} is newer than this raypipe reads "
                         f"({FORMAT_VERSION}); upgrade raypipe")
    return metadata


def model_config(path: str | Path | None = None, storage_options: StorageOptions = None) -> ModelConfig:
    """A model file's config (its grid: ``n_slices``, ``size``, ``fov``; its head) without loading weights."""
    path = local_model_file(path, storage_options)
    return ModelConfig.from_dict(json.loads(read_header(path)["config"]))
