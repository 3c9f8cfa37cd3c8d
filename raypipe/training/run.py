"""A training run's configuration and state, shared by the Ray Train job and the plain torch loop.

- :class:`TrainConfig`: what a run does (data, storage, model preset and overrides, augmentation, steps,
  validation, ``init_from`` a model file to continue an earlier model's training). Read from JSON/YAML;
  checked on the driver (a typo in ``augment`` fails before any worker starts).
- :class:`RunState`: step, metrics log, best validation so far and the best generator's model file;
  written to and restored from a checkpoint folder (``state.pt`` loaded with ``weights_only=True``,
  ``metrics.jsonl``, ``best.safetensors``), after mlspm's checkpoint and log objects.

The best model is chosen by validation **total** (exact molecules), then per-atom F1, then the lowest
validation loss.
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from raypipe.training.augment import AugmentConfig
from raypipe.model.config import TRAINABLE, ModelConfig


@dataclass
class TrainConfig:
    data_uri: str | list[str]  # a data set's URI, or a list of them trained on as one pool of shards
    storage_path: str
    run_name: str
    model: str = "small"  # preset: "small", "small-palette" or "paper"
    model_overrides: dict = field(default_factory=dict)
    augment: dict = field(default_factory=dict)  # AugmentConfig fields; "preset": "experimental" for the recipe
    init_from: str | None = None  # a model file whose generator weights start this run (same architecture)
    data_shares: list[float] | None = None  # plain loop: each data set's share of the shards drawn (None: alike)
    trainable: str = "all"  # plain loop: "all", or "centres" / "counts" (only that branch learns; Pix2Pix)
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    batch_size: int = 8  # per worker
    steps: int = 1000
    checkpoint_every: int = 100
    val_every: int = 100  # a multiple of checkpoint_every
    val_samples: int = 64
    log_every: int = 10
    max_failures: int = 2
    seed: int = 0
    cache_data: bool = False  # keep the decoded train split in Ray's object store (small datasets, many epochs)
    device: str = "auto"  # plain loop only: "auto" (CUDA when present), "cpu", "cuda"
    threads: int = 0  # plain loop only: torch CPU threads (0 = torch's default)
    max_seconds: float = 0.0  # plain loop only: validate, checkpoint and stop after this long (0: no limit)

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "TrainConfig":
        """Read a JSON or YAML config file; ``overrides`` (not None) replace its values."""
        text = Path(path).read_text()
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
        data.update({k: v for k, v in overrides.items() if v is not None})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown training config keys {unknown}")
        return cls(**data)

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict({**ModelConfig.preset(self.model).to_dict(), **self.model_overrides})

    def augment_config(self) -> AugmentConfig:
        return AugmentConfig.from_dict(self.augment)

    def check(self) -> None:
        """Everything that can be checked before a worker starts."""
        from raypipe.training.data import check_shares, data_uris

        check_shares(self.data_shares, data_uris(self.data_uri))
        if self.val_every % self.checkpoint_every:
            raise ValueError(f"val_every ({self.val_every}) must be a multiple of checkpoint_every "
                             f"({self.checkpoint_every})")
        if self.num_workers < 1 or self.batch_size < 1 or self.steps < 1:
            raise ValueError("num_workers, batch_size and steps must be positive")
        model_config = self.model_config()
        self.augment_config()
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}, got {self.trainable!r}")
        if self.trainable in ("centres", "counts") and not getattr(model_config, self.trainable):
            raise ValueError(f"trainable {self.trainable!r} needs that output: set {self.trainable}: true in "
                             "model_overrides")
        if self.init_from:
            from raypipe.model.files import read_header

            if not Path(self.init_from).is_file():
                raise FileNotFoundError(f"init_from {self.init_from}: no such model file")
            header = read_header(self.init_from)
            theirs = ModelConfig.from_dict(json.loads(header["config"]))
            mine = self.model_config()
            shape = ("n_slices", "size", "head", "ngf", "conv3d_channels")
            if any(getattr(theirs, k) != getattr(mine, k) for k in shape) or any(
                    getattr(theirs, k) and not getattr(mine, k) for k in ("centres", "counts")):
                raise ValueError(f"init_from {self.init_from}: its network ({_shape(theirs, shape)}) differs from "
                                 f"this run's ({_shape(mine, shape)})")


def _shape(config: ModelConfig, keys) -> str:
    return ", ".join(f"{k}={getattr(config, k)}" for k in keys)


def f1(metrics: dict) -> float:
    """Harmonic mean of the per-atom precision and recall of a validation."""
    p, r = metrics.get("val_precision", 0.0), metrics.get("val_recall", 0.0)
    return 2 * p * r / (p + r) if p + r else 0.0


def score_key(metrics: dict) -> list[float]:
    """Best-model order: total, then per-atom F1, then the lowest validation loss."""
    return [metrics["val_total"], f1(metrics), -metrics.get("val_loss", 0.0)]


@dataclass
class RunState:
    """Step, metrics log, best validation and best model file of a run (module docs)."""

    step: int = 0
    log: list[dict] = field(default_factory=list)
    best: dict | None = None  # {"step": ..., "key": [...]}
    best_file: bytes = b""

    def record(self, metrics: dict, echo: bool = True) -> None:
        self.log.append(metrics)
        if echo:
            print(json.dumps(metrics), flush=True)

    def consider(self, metrics: dict, generator, config: ModelConfig, name: str) -> bool:
        """After a validation: keep ``generator`` as the best model when its scores beat the best so far."""
        key = score_key(metrics)
        if self.best is not None and key <= list(self.best["key"]):
            return False
        from raypipe.model.files import save_model

        self.best = {"step": metrics["step"], "key": key}
        with tempfile.TemporaryDirectory() as folder:
            path = save_model(generator, config, Path(folder) / "best.safetensors", name=name,
                              notes={"step": metrics["step"], **{k: v for k, v in metrics.items()
                                                                 if k.startswith("val_")}})
            self.best_file = path.read_bytes()
        metrics["best"] = True
        return True

    def metrics_jsonl(self) -> str:
        return "".join(json.dumps(m) + "\n" for m in self.log)

    def save(self, folder: str | Path, model_state: dict) -> None:
        """Write the state and the networks/optimisers' ``model_state`` into ``folder``."""
        import torch

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model_state, "step": self.step, "best": self.best}, folder / "state.pt")
        (folder / "metrics.jsonl").write_text(self.metrics_jsonl())
        if self.best_file:
            (folder / "best.safetensors").write_bytes(self.best_file)

    @classmethod
    def restore(cls, folder: str | Path, device) -> tuple["RunState", dict]:
        """(state, model_state) from a checkpoint folder written by :meth:`save`."""
        import torch

        folder = Path(folder)
        saved = torch.load(folder / "state.pt", map_location=device, weights_only=True)
        log = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line]
        best_path = folder / "best.safetensors"
        state = cls(int(saved["step"]), log, saved["best"], best_path.read_bytes() if best_path.exists() else b"")
        state.log.append({"step": state.step, "event": f"resumed from checkpoint at step {state.step}"})
        return state, saved["model"]


class Steps:
    """The body of a training step, shared by the plain loop (:mod:`raypipe.training.loop`) and the Ray Train
    loop (:mod:`raypipe.pipelines.train`): augment the batch, set the learning rate, one optimisation step,
    count it, and every ``log_every`` (or checkpoint) step the window's mean losses, learning rate and
    samples/s (``world_size`` replicas each see their own batch)."""

    def __init__(self, cfg: TrainConfig, state: RunState, model, augment_config, rng, world_size: int = 1):
        self.cfg, self.state, self.model = cfg, state, model
        self.augment_config, self.rng, self.world_size = augment_config, rng, world_size
        self.restart_clock()
        self.losses: list[dict] = []

    def restart_clock(self) -> None:
        """Time spent from now on counts towards samples/s (not validation's or checkpointing's)."""
        import time

        self.window_start, self.window_samples = time.perf_counter(), 0

    def __call__(self, stack, target, *, last: bool = False) -> dict:
        """One step on raw batches; returns ``{"step": n}`` plus the window's figures when they are due."""
        import time

        import numpy as np

        from raypipe.training.augment import augment

        cfg = self.cfg
        stack, target = augment(stack, target, self.augment_config, self.rng)
        lr = self.model.set_learning_rate(self.state.step, cfg.steps)
        self.losses.append(self.model.train_step(stack, target))
        self.state.step += 1
        self.window_samples += stack.shape[0]
        metrics: dict = {"step": self.state.step}
        if self.state.step % cfg.log_every == 0 or self.state.step % cfg.checkpoint_every == 0 or last:
            elapsed = time.perf_counter() - self.window_start
            metrics.update({k: float(np.mean([l[k] for l in self.losses if k in l])) for k in self.losses[0]})
            metrics.update({"lr": lr, "samples_per_s": self.window_samples * self.world_size / elapsed})
            self.losses = []
            self.restart_clock()
        return metrics


def init_generator(generator, path: str | Path) -> None:
    """Start from a model file's weights (``init_from``): a later run continues an earlier model. A
    model without the atom-centre (count) output may start one with it: the new branch keeps its fresh
    weights."""
    import torch
    from safetensors.torch import load_file

    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    target = getattr(generator, "module", generator)
    with torch.no_grad():
        missing, unexpected = target.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(("centres.", "counts."))]
    if missing or unexpected:
        raise ValueError(f"init_from {path}: its weights do not fit this run's network "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def plot_metrics(log: list[dict]) -> bytes:
    """Losses and validation scores against steps, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    loss_keys = sorted({k for m in log for k in m if k.startswith("loss_")})
    for key in loss_keys:
        points = [(m["step"], m[key]) for m in log if key in m and m[key] > 0]
        if points:
            ax1.plot(*zip(*points), label=key)
    for key in ("val_total", "val_composition", "val_precision", "val_recall", "val_counts_formula", "val_counts_heavy"):
        points = [(m["step"], m[key]) for m in log if key in m]
        if points:
            ax2.plot(*zip(*points), marker="o", markersize=3, label=key)
    ax1.set_xlabel("step"), ax2.set_xlabel("step"), ax1.set_yscale("log"), ax2.set_ylim(0, 1)
    ax1.set_title("training losses"), ax2.set_title("validation")
    ax1.legend(fontsize=7), ax2.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()
