"""Inference: :class:`Model` (a loaded generator with its config, calibration and test-time views) and
:meth:`Model.infer`, the one place the network runs on a batch of preprocessed stacks, returning a
:class:`Prediction`. Reading a prediction into graphs and confidences is :mod:`raypipe.model.reading`.

``load_model()`` with no path loads the model shipped inside the package
(:data:`raypipe.resources.SHIPPED_MODEL`); files are read through :mod:`raypipe.model.files`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raypipe.chem.elements import ELEMENTS
from raypipe.model.calibration import Calibration, margin_stats
from raypipe.model.config import ModelConfig
from raypipe.model.files import ModelFile, check_views, load_weights
from raypipe.model.networks import Generator, define_G
from raypipe.storage import StorageOptions

# on a CPU, ``Model.infer`` runs the network on this many stacks at a time (0: the whole batch at once): the
# stem's activations of 2 stacks stay in cache (docs/performance.md)
CPU_MICRO_BATCH = int(os.environ.get("RAYPIPE_CPU_MICRO_BATCH", "2"))
# test-time views of a stack, each mapped back onto the stack's frame and combined by the head: the flips of
# the scan plane, symmetries of a constant-height scan (each flip is its own inverse); ``views = n`` uses the
# first n (docs/model-card.md: 4 views against 1)
VIEWS = (lambda x: x, lambda x: x.flip(-2, -1), lambda x: x.flip(-1), lambda x: x.flip(-2))
DEFAULT_VIEWS = 1  # where a model file does not say (``views`` in its header, set by jobs/ship_model.py)


@dataclass
class Prediction:
    """What a model predicts for a batch of stacks (:meth:`Model.infer`)."""

    depictions: np.ndarray  # (B, S, S, 3) uint8
    margins: np.ndarray  # (B, S, S) float32 in [0, 1]: the head's per-pixel certainty
    centres: np.ndarray | None  # (B, S, S) float32 atom-centre probabilities; None without that output
    counts: np.ndarray | None = None  # (B, len(ELEMENTS)) float32 expected atoms of each element; None without

    def __len__(self) -> int:
        return len(self.depictions)

    def centre_map(self, k: int) -> np.ndarray | None:
        """Stack ``k``'s centre map, or None (what :func:`raypipe.extract_graph` takes as ``centres``)."""
        return None if self.centres is None else self.centres[k]

    def count_of(self, k: int) -> dict[str, float] | None:
        """Stack ``k``'s expected atoms of each element, or None (what :func:`raypipe.extract_graph` takes as
        ``counts``)."""
        return None if self.counts is None else element_counts(self.counts[k])

    def margin_stats(self, k: int) -> tuple[float, float]:
        """Stack ``k``'s (mean margin, fraction of low margins) over its molecule's pixels."""
        return margin_stats(self.margins[k], self.depictions[k])

    @classmethod
    def empty(cls, size: int, centres: bool, counts: bool = False) -> "Prediction":
        blank = np.zeros((0, size, size), np.float32)
        return cls(np.zeros((0, size, size, 3), np.uint8), blank, blank if centres else None,
                   np.zeros((0, len(ELEMENTS)), np.float32) if counts else None)

    @classmethod
    def concatenate(cls, parts: list["Prediction"], size: int, centres: bool, counts: bool = False) -> "Prediction":
        if not parts:
            return cls.empty(size, centres, counts)
        return cls(np.concatenate([p.depictions for p in parts]), np.concatenate([p.margins for p in parts]),
                   np.concatenate([p.centres for p in parts]) if centres else None,
                   np.concatenate([p.counts for p in parts]) if counts else None)


def element_counts(values) -> dict[str, float]:
    """A count output's row ((len(ELEMENTS),) numbers) as ``{element: expected atoms}``."""
    return {e: float(n) for e, n in zip(ELEMENTS, values)}


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
        """A generator being trained, used through the same inference path as a loaded model."""
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

    @property
    def has_counts(self) -> bool:
        """Whether the model has the count output (config ``counts``)."""
        return self.config.counts

    @torch.no_grad()
    def infer(self, stacks: np.ndarray | torch.Tensor, *, views: int | None = None) -> Prediction:
        """(B, n_slices, S, S) preprocessed stacks (B may be 0) -> a :class:`Prediction`: depictions, the
        head's per-pixel margins and, for a model with the atom-centre (count) output, its centre
        probabilities (its expected atoms of each element).
        ``views``: how many of ``VIEWS`` each stack is seen in (default: the model's own); each costs one
        pass. On a CPU the network runs on ``CPU_MICRO_BATCH`` stacks at a time. The generator is run in
        eval mode and left in the mode it was in.

        Examples:
            >>> import numpy as np
            >>> model = load_model(device="cpu")
            >>> out = model.infer(np.zeros((0, *model.input_shape), np.float32))
            >>> len(out), out.depictions.shape[1:]
            (0, (128, 128, 3))
        """
        x = torch.as_tensor(stacks, dtype=torch.float32, device=self.device)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected stacks of shape (B, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}")
        views = VIEWS[:check_views(views or self.views)]
        step = CPU_MICRO_BATCH if self.device.type == "cpu" and CPU_MICRO_BATCH > 0 else len(x)
        head = self.generator.head
        was_training = self.generator.training
        self.generator.eval()
        parts = []
        try:
            for start in range(0, len(x), max(1, step)):
                part = x[start:start + step]
                if len(views) == 1:
                    y = self.generator(part)
                else:  # each flip is its own inverse
                    y = head.combine([view(self.generator(view(part))) for view in views])
                centres = head.centres(y).float().cpu().numpy() if self.has_centres else None
                counts = head.counts(y).float().cpu().numpy() if self.has_counts else None
                parts.append(Prediction(head.depiction(y), head.margin(y).float().cpu().numpy(), centres, counts))
        finally:
            self.generator.train(was_training)
        return Prediction.concatenate(parts, self.config.size, self.has_centres, self.has_counts)

    def predict(self, stacks: np.ndarray | torch.Tensor, *, views: int | None = None) -> np.ndarray:
        """(B, n_slices, S, S) preprocessed stacks -> (B, S, S, 3) uint8 depictions (:meth:`infer`'s)."""
        return self.infer(stacks, views=views).depictions


def load_model(path: str | Path | ModelFile | None = None, device: str | torch.device | None = None, *,
               storage_options: StorageOptions = None, views: int | None = None) -> Model:
    """Load a model file (default: the shipped model; a path, an ``s3://`` URI or an opened
    :class:`~raypipe.model.files.ModelFile`) onto ``device`` (default: CUDA when present).

    ``views``: test-time augmentation (``VIEWS``); default: the file's own ``views`` (what its calibration
    was fitted with), else 1.

    Raises FileNotFoundError for a missing file and ValueError for a file that is not a raypipe model,
    is of a newer format, or whose weights do not match its own config (a damaged or edited file).

    Examples:
        >>> model = load_model(device="cpu")
        >>> model.tag.startswith("raypipe-small@"), model.input_shape
        (True, (10, 128, 128))
    """
    file = path if isinstance(path, ModelFile) else ModelFile.open(path, storage_options)
    local = file.local(storage_options)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = file.config
    generator = define_G(config)
    try:
        generator.load_state_dict(load_weights(local))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1:2] or [str(exc)[:200]]
        raise ValueError(f"{local}: the weights do not match the model's own config ({first[0].strip()})") from None
    generator.to(device).eval()
    views = check_views(views or file.header.get("views") or DEFAULT_VIEWS)
    return Model(generator, config, file.name, file.sha256, json.loads(file.header.get("notes", "{}")), device,
                 Calibration.from_json(file.calibration_json), views)
