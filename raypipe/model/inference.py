"""Model files and inference: safetensors weights with the JSON config in the file's header; no pickle.

A model file holds the generator's weights (fp16 or fp32) and, in the safetensors metadata,
``config`` (the :class:`ModelConfig` as JSON), ``name`` and training notes. ``load_model()`` with no
path loads the model shipped inside the package (``raypipe/models/``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from raypipe.model.config import ModelConfig
from raypipe.model.networks import Generator, define_G

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "models" / "raypipe-small.safetensors"


def save_model(generator: torch.nn.Module, config: ModelConfig, path: str | Path, *, name: str,
               notes: dict | None = None, half: bool = True) -> Path:
    """Write the generator to ``path`` (.safetensors), fp16 by default (integer buffers kept)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu()
             for k, v in getattr(generator, "module", generator).state_dict().items()}
    metadata = {"format": "raypipe-model", "config": json.dumps(config.to_dict()), "name": name,
                "notes": json.dumps(notes or {})}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


@dataclass
class Model:
    """A loaded generator, ready for inference."""

    generator: Generator
    config: ModelConfig
    name: str
    sha256: str
    notes: dict
    device: torch.device

    @property
    def tag(self) -> str:
        """``name@hash12``: what the output rows record."""
        return f"{self.name}@{self.sha256[:12]}"

    @torch.no_grad()
    def predict(self, stacks: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, n_slices, S, S) preprocessed stacks -> (B, S, S, 3) uint8 depictions."""
        x = torch.as_tensor(stacks, dtype=torch.float32, device=self.device)
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.config.n_slices, self.config.size, self.config.size):
            raise ValueError(f"expected stacks of shape (B, {self.config.n_slices}, {self.config.size}, "
                             f"{self.config.size}), got {tuple(x.shape)}")
        y = self.generator(x)
        return to_uint8(y)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) in [-1, 1] -> (B, S, S, 3) uint8."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def model_tag(path: str | Path | None = None) -> str:
    """``name@hash12`` of a model file (default: the shipped model) without loading its weights."""
    path = Path(path) if path is not None else SHIPPED_MODEL
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"{path}: not a safetensors model file ({exc})") from exc
    if metadata.get("format") != "raypipe-model":
        raise ValueError(f"{path}: not a raypipe model file (no format=raypipe-model in its header)")
    return f"{metadata.get('name', path.stem)}@{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


def load_model(path: str | Path | None = None, device: str | torch.device | None = None) -> Model:
    """Load a model file (default: the shipped model) onto ``device`` (default: CUDA when present)."""
    path = Path(path) if path is not None else SHIPPED_MODEL
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if metadata.get("format") != "raypipe-model":
        raise ValueError(f"{path}: not a raypipe model file (no format=raypipe-model in its header)")
    config = ModelConfig.from_dict(json.loads(metadata["config"]))
    generator = define_G(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    generator.load_state_dict(state)
    generator.to(device).eval()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Model(generator, config, metadata.get("name", path.stem), digest, json.loads(metadata.get("notes", "{}")),
                 device)
