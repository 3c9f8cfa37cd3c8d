"""Model files and inference: safetensors weights with the JSON config in the file's header; no pickle.

A model file holds the generator's weights (fp16 or fp32) and, in the safetensors metadata,
``format`` = ``raypipe-model``, ``format_version`` (2: the config carries the grid and the head; files
without it are version 1, read as the RGB head on the 18 Å / 128 px window), ``config`` (the
:class:`ModelConfig` as JSON), ``name`` and training notes. ``load_model()`` with no path loads the
model shipped inside the package (``raypipe/models/``).

Model files may live anywhere :mod:`raypipe.storage` reaches (a path or ``s3://``): ``save_model`` writes
them atomically there, and ``load_model`` / ``model_tag`` / ``model_config`` read them from there (an
``s3://`` file is fetched once into a local cache keyed by its ETag/size/time), so a model written to S3 by
the training RayJob is used by the labelling RayJob (``--model s3://...``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from raypipe.model.calibration import Calibration
from raypipe.model.config import ModelConfig
from raypipe.model.networks import Generator, define_G
from raypipe.storage import StorageOptions, filesystem, is_remote, redact, write_bytes_atomic

FORMAT_VERSION = 2
# on a CPU, ``Model.predict`` runs the network on this many stacks at a time (0: the whole batch at once):
# the stem's activations of 2 stacks stay in cache, and a batch no longer allocates ~170 MB at once.
# Measured, shipped network, a 16-stack batch: 12.4 against 16.1 ms a stack on 2 threads (18.3 against 21.1
# on 1), peak RSS 614 against 755 MiB; 1 stack at a time is slower (19.5) (README "Performance settings")
CPU_MICRO_BATCH = int(os.environ.get("RAYPIPE_CPU_MICRO_BATCH", "2"))

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "models" / "raypipe-small.safetensors"


def save_model(generator: torch.nn.Module, config: ModelConfig, path: str | Path, *, name: str,
               notes: dict | None = None, half: bool = True, storage_options: StorageOptions = None,
               calibration: Calibration | None = None):
    """Write the generator to ``path`` (.safetensors, a local path or ``s3://`` URI), fp16 by default
    (integer buffers kept), atomically, with its confidence ``calibration`` when given. Returns the path
    (a Path when local)."""
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


def write_calibration(model: str | Path | None, calibration: Calibration, out: str | Path, *,
                      storage_options: StorageOptions = None):
    """A copy of a model file (default: the shipped one) with ``calibration`` in its header; weights,
    config and name unchanged (the notes record where the calibration was fitted)."""
    return rewrite_model(model, out, calibration=calibration, storage_options=storage_options)


def rewrite_model(model: str | Path | None, out: str | Path, *, name: str | None = None, notes: dict | None = None,
                  calibration: Calibration | None = None, storage_options: StorageOptions = None):
    """A copy of a model file with another ``name``, more training ``notes`` (merged into its own) or a
    ``calibration``; the weights and config are unchanged."""
    path = local_model_file(model, storage_options)
    metadata = dict(read_header(path))
    merged = {**json.loads(metadata.get("notes", "{}")), **(notes or {})}
    if calibration is not None:
        merged["calibration"] = calibration.fitted_on
        metadata["calibration"] = calibration.to_json()
    if name is not None:
        metadata["name"] = name
    metadata["notes"] = json.dumps(merged)
    return _write(out, load_file(str(path)), metadata, storage_options)


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


@dataclass
class Model:
    """A loaded generator, ready for inference."""

    generator: Generator
    config: ModelConfig
    name: str
    sha256: str
    notes: dict
    device: torch.device
    calibration: Calibration | None = None  # P(formula right) from features of a prediction; None: uncalibrated

    @property
    def tag(self) -> str:
        """``name@hash12``: what the output rows record."""
        return f"{self.name}@{self.sha256[:12]}"

    @classmethod
    def from_generator(cls, generator: torch.nn.Module, config: ModelConfig, name: str = "training") -> "Model":
        """A generator being trained, used through the same predict path as a loaded model."""
        bare = getattr(generator, "module", generator)
        device = next(bare.parameters()).device
        return cls(bare, config, name, "0" * 64, {}, device)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(n_slices, S, S): what :func:`raypipe.preprocess` must produce for this model."""
        return (self.config.n_slices, self.config.size, self.config.size)

    @torch.no_grad()
    def predict(self, stacks: np.ndarray | torch.Tensor, *, with_margin: bool = False):
        """(B, n_slices, S, S) preprocessed stacks -> (B, S, S, 3) uint8 depictions; with ``with_margin``
        also (B, S, S) float32 per-pixel certainty in [0, 1] (the head's margin)."""
        x = torch.as_tensor(stacks, dtype=torch.float32, device=self.device)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected stacks of shape (B, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}")
        step = CPU_MICRO_BATCH if self.device.type == "cpu" and CPU_MICRO_BATCH > 0 else len(x)
        depictions, margins = [], []
        for start in range(0, len(x), max(1, step)):
            y = self.generator(x[start:start + step])
            depictions.append(self.generator.head.depiction(y))
            if with_margin:
                margins.append(self.generator.head.margin(y).float().cpu().numpy())
        depictions = np.concatenate(depictions) if depictions else np.zeros((0, *x.shape[2:], 3), np.uint8)
        if with_margin:
            return depictions, np.concatenate(margins) if margins else np.zeros((0, *x.shape[2:]), np.float32)
        return depictions


def model_tag(path: str | Path | None = None, storage_options: StorageOptions = None) -> str:
    """``name@hash12`` of a model file (default: the shipped model) without loading its weights."""
    path = local_model_file(path, storage_options)
    metadata = read_header(path)
    return f"{metadata.get('name', path.stem)}@{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


def read_header(path: str | Path) -> dict:
    """A model file's safetensors header (metadata), checked: a raypipe model of a known format version."""
    try:
        with safe_open(str(path), framework="pt") as f:
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


def load_model(path: str | Path | None = None, device: str | torch.device | None = None, *,
               storage_options: StorageOptions = None) -> Model:
    """Load a model file (default: the shipped model; a path or ``s3://`` URI) onto ``device`` (default:
    CUDA when present).

    Raises FileNotFoundError for a missing file and ValueError for a file that is not a raypipe model,
    is of a newer format, or whose weights do not match its own config (a damaged or edited file)."""
    path = local_model_file(path, storage_options)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    metadata = read_header(path)
    config = ModelConfig.from_dict(json.loads(metadata["config"]))
    generator = define_G(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    try:
        generator.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1:2] or [str(exc)[:200]]
        raise ValueError(f"{path}: the weights do not match the model's own config ({first[0].strip()})") from None
    generator.to(device).eval()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Model(generator, config, metadata.get("name", path.stem), digest, json.loads(metadata.get("notes", "{}")),
                 device, Calibration.from_json(metadata.get("calibration")))
