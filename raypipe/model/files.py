"""Model files: safetensors weights with the JSON config in the file's header; no pickle. Saving and
reading them lives here, below the networks (:mod:`raypipe.model.networks`) and inference
(:mod:`raypipe.model.inference`), which both use it.

A model file holds the generator's weights (fp16 or fp32) and, in the safetensors metadata, ``format`` =
``raypipe-model``, ``format_version`` (:data:`FORMAT_VERSION`), ``config`` (the :class:`ModelConfig` as JSON),
``name``, training ``notes``, and optionally ``calibration`` and ``views``. Files may live anywhere
:mod:`raypipe.storage` reaches: an ``s3://`` file is fetched once into a local cache keyed by its
ETag/size/time.

Nothing here imports torch at module level: a labelling driver plans a run from a :class:`ModelFile` (grid,
calibration, tag; read and hashed once) while only the inference actors load weights (importing torch costs
a process ~320 MiB).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from raypipe.model.config import ModelConfig
from raypipe.resources import SHIPPED_MODEL
from raypipe.storage import StorageOptions, filesystem, is_remote, redact, write_bytes_atomic

# 1: no head in the config (the RGB head); 2: the config has the grid and the head; 3: the config may add an
# atom-centre output (``centres``), whose weights an older raypipe would not expect; 4: it may add a count
# output (``counts``)
FORMAT_VERSION = 4


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


@dataclass(frozen=True)
class ModelFile:
    """A model file found, its header checked and its bytes hashed once (:meth:`open`): what a job plans
    with and hands to its inference actors, which then load the weights without reading the header or
    hashing again. ``uri``: where it is (None: the shipped model); ``path``: the local copy."""

    uri: str | None
    path: Path
    header: dict
    sha256: str

    @classmethod
    def open(cls, uri: str | Path | None = None, storage_options: StorageOptions = None) -> "ModelFile":
        path = local_model_file(uri, storage_options)
        header = read_header(path)
        return cls(None if uri in (None, "") else str(uri), path, header, hashlib.sha256(path.read_bytes()).hexdigest())

    @property
    def name(self) -> str:
        return self.header.get("name", self.path.stem)

    @property
    def tag(self) -> str:
        """``name@hash12``: what the output rows record."""
        return f"{self.name}@{self.sha256[:12]}"

    @property
    def config(self) -> ModelConfig:
        return ModelConfig.from_dict(json.loads(self.header["config"]))

    @property
    def calibration_json(self) -> str | None:
        return self.header.get("calibration")

    def local(self, storage_options: StorageOptions = None) -> Path:
        """The local file on this machine (another node fetches an ``s3://`` file into its own cache)."""
        return self.path if self.path.is_file() else local_model_file(self.uri, storage_options)


def model_tag(path: str | Path | None = None, storage_options: StorageOptions = None) -> str:
    """``name@hash12`` of a model file (default: the shipped model) without loading its weights."""
    return ModelFile.open(path, storage_options).tag


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


def save_model(generator, config: ModelConfig, path: str | Path, *, name: str, notes: dict | None = None,
               half: bool = True, storage_options: StorageOptions = None, calibration=None):
    """Write a generator's weights with ``config`` to ``path`` (.safetensors, a local path or ``s3://``),
    fp16 by default (integer buffers kept), atomically, with its confidence ``calibration``
    (:class:`raypipe.model.calibration.Calibration`) when given. Returns the path (a Path when local)."""
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu()
             for k, v in getattr(generator, "module", generator).state_dict().items()}
    metadata = {"format": "raypipe-model", "format_version": str(FORMAT_VERSION),
                "config": json.dumps(config.to_dict()), "name": name, "notes": json.dumps(notes or {})}
    if calibration is not None:
        metadata["calibration"] = calibration.to_json()
    return _write(path, state, metadata, storage_options)


def _write(path, state: dict, metadata: dict, storage_options: StorageOptions):
    from safetensors.torch import save as to_bytes

    data = to_bytes(state, metadata=metadata)
    fs, where = filesystem(str(path), storage_options)
    write_bytes_atomic(fs, where, data)
    return path if is_remote(path) else Path(where)


def load_weights(path: str | Path) -> dict:
    """A model file's tensors as float32 (integer buffers kept): what a generator loads."""
    from safetensors.torch import load_file

    return {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}


def rewrite_model(model: str | Path | None, out: str | Path, *, name: str | None = None, notes: dict | None = None,
                  calibration=None, views: int | None = None, storage_options: StorageOptions = None):
    """A copy of a model file (default: the shipped one) with another ``name``, more training ``notes``
    (merged into its own), a ``calibration`` or its default test-time ``views``; weights and config unchanged."""
    from safetensors.torch import load_file

    path = local_model_file(model, storage_options)
    metadata = dict(read_header(path))
    merged = {**json.loads(metadata.get("notes", "{}")), **(notes or {})}
    if calibration is not None:
        merged["calibration"] = calibration.fitted_on
        metadata["calibration"] = calibration.to_json()
    if name is not None:
        metadata["name"] = name
    if views is not None:
        metadata["views"] = str(check_views(views))
    metadata["notes"] = json.dumps(merged)
    return _write(out, load_file(str(path)), metadata, storage_options)


MAX_VIEWS = 4  # test-time views: the flips of the scan plane (raypipe.model.inference.VIEWS)


def check_views(views: int) -> int:
    if not 1 <= int(views) <= MAX_VIEWS:
        raise ValueError(f"views must be 1 to {MAX_VIEWS} (the flips of the scan plane), got {views}")
    return int(views)
