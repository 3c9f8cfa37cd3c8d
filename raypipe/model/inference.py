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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from raypipe.model.calibration import Calibration
from raypipe.model.config import ModelConfig
from raypipe.model.files import (FORMAT_VERSION, SHIPPED_MODEL, local_model_file, model_config,  # noqa: F401
                                 model_tag, read_header)
from raypipe.model.networks import Generator, define_G
from raypipe.storage import StorageOptions, filesystem, is_remote, write_bytes_atomic
# on a CPU, ``Model.predict`` runs the network on this many stacks at a time (0: the whole batch at once):
# the stem's activations of 2 stacks stay in cache, and a batch no longer allocates ~170 MB at once.
# Measured, shipped network, a 16-stack batch: 12.4 against 16.1 ms a stack on 2 threads (18.3 against 21.1
# on 1), peak RSS 614 against 755 MiB; 1 stack at a time is slower (19.5) (README "Performance settings")
CPU_MICRO_BATCH = int(os.environ.get("RAYPIPE_CPU_MICRO_BATCH", "2"))
# test-time augmentation: the views of a stack the network sees, each mapped back onto the stack's frame
# and combined by the head (palette: the mean class probabilities). The flips of the scan plane are
# symmetries of a constant-height scan (the model is trained under every rotation and a mirror image);
# ``views = n`` uses the first n of these (each flip is its own inverse). Measured on 400 val stacks, the
# step-10,000 network: formula right 1.25 % with 1 view, 3.0 % with 2 (the stack and its 180° turn; 2.5-3.0 %
# with either mirror instead), 4.5 % with the 4 flips, 3.25 % with all 8 rotations and mirror images;
# per-atom precision 0.67 -> 0.72, recall 0.70 -> 0.68 (README "Model card")
VIEWS = (lambda x: x, lambda x: x.flip(-2, -1), lambda x: x.flip(-1), lambda x: x.flip(-2))
# where a model file does not say: its header's ``views`` is set when it is shipped (``jobs/ship_model.py``)
# with the calibration fitted under it; the views are part of the file, so the rows' model tag covers them
DEFAULT_VIEWS = 1


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
                  calibration: Calibration | None = None, views: int | None = None,
                  storage_options: StorageOptions = None):
    """A copy of a model file with another ``name``, more training ``notes`` (merged into its own), a
    ``calibration`` or its default test-time ``views``; the weights and config are unchanged."""
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
    views: int = DEFAULT_VIEWS  # test-time augmentation: views of each stack combined (``VIEWS``)

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

    @property
    def has_centres(self) -> bool:
        """Whether the model has the atom-centre output (config ``centres``)."""
        return self.config.centres

    @torch.no_grad()
    def infer(self, stacks: np.ndarray | torch.Tensor, *, views: int | None = None) -> "Prediction":
        """(B, n_slices, S, S) preprocessed stacks -> a :class:`Prediction`: depictions, the head's per-pixel
        margins and, for a model with the atom-centre output, its centre probabilities. ``views``: how many
        of ``VIEWS`` each stack is seen in (default: the model's own, ``self.views``); each costs one pass."""
        x = torch.as_tensor(stacks, dtype=torch.float32, device=self.device)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected stacks of shape (B, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}")
        views = VIEWS[:check_views(views or self.views)]
        step = CPU_MICRO_BATCH if self.device.type == "cpu" and CPU_MICRO_BATCH > 0 else len(x)
        head = self.generator.head
        depictions, margins, centres = [], [], []
        for start in range(0, len(x), max(1, step)):
            part = x[start:start + step]
            if len(views) == 1:
                y = self.generator(part)
            else:  # each flip is its own inverse
                y = head.combine([view(self.generator(view(part))) for view in views])
            depictions.append(head.depiction(y))
            margins.append(head.margin(y).float().cpu().numpy())
            if self.has_centres:
                centres.append(head.centres(y).float().cpu().numpy())
        empty = np.zeros((0, *x.shape[2:]), np.float32)
        return Prediction(np.concatenate(depictions) if depictions else np.zeros((0, *x.shape[2:], 3), np.uint8),
                          np.concatenate(margins) if margins else empty,
                          (np.concatenate(centres) if centres else empty) if self.has_centres else None)

    def predict(self, stacks: np.ndarray | torch.Tensor, *, with_margin: bool = False, views: int | None = None):
        """(B, n_slices, S, S) preprocessed stacks -> (B, S, S, 3) uint8 depictions; with ``with_margin``
        also (B, S, S) float32 per-pixel certainty in [0, 1] (the head's margin). ``views`` as in
        :meth:`infer`, which also gives the atom-centre map."""
        out = self.infer(stacks, views=views)
        return (out.depictions, out.margins) if with_margin else out.depictions


@dataclass
class Prediction:
    """What a model predicts for a batch of stacks (:meth:`Model.infer`)."""

    depictions: np.ndarray  # (B, S, S, 3) uint8
    margins: np.ndarray  # (B, S, S) float32 in [0, 1]: the head's per-pixel certainty
    centres: np.ndarray | None  # (B, S, S) float32 atom-centre probabilities; None without that output

    def centre_map(self, k: int) -> np.ndarray | None:
        """Stack ``k``'s centre map, or None (what :func:`raypipe.extract_graph` takes as ``centres``)."""
        return None if self.centres is None else self.centres[k]


def check_views(views: int) -> int:
    if not 1 <= int(views) <= len(VIEWS):
        raise ValueError(f"views must be 1 to {len(VIEWS)} (the flips of the scan plane), got {views}")
    return int(views)


def load_model(path: str | Path | None = None, device: str | torch.device | None = None, *,
               storage_options: StorageOptions = None, views: int | None = None) -> Model:
    """Load a model file (default: the shipped model; a path or ``s3://`` URI) onto ``device`` (default:
    CUDA when present).

    ``views``: test-time augmentation (``VIEWS``); default: the file's own ``views`` (what its calibration
    was fitted with), else 1.

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
    views = check_views(views or metadata.get("views") or DEFAULT_VIEWS)
    return Model(generator, config, metadata.get("name", path.stem), digest, json.loads(metadata.get("notes", "{}")),
                 device, Calibration.from_json(metadata.get("calibration")), views)
