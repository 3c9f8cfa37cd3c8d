"""GAN training on Ray Train: ``TrainConfig``, ``train_func`` (one per worker) and the ``train`` driver.

Data: the simulation shards, read with Ray Data; the train split is streamed to the workers
(``get_dataset_shard``), the val split is scored on rank 0. Every ``checkpoint_every`` steps each
worker reports and rank 0 saves a checkpoint (both networks, both optimisers, the step, the metrics
log, and the best generator so far as a model file) to ``storage_path/run_name``. Running again with the
same ``run_name`` resumes from the latest checkpoint; ``max_failures`` worker-group restarts are
survived (a killed worker restarts the group from the latest checkpoint). When the run ends, the
driver writes ``metrics.jsonl``, ``metrics.png`` and ``model.safetensors`` (the best validated
generator) beside the checkpoints.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from raypipe.model.augment import AugmentConfig
from raypipe.model.config import ModelConfig
from raypipe.storage import StorageOptions, arrow_filesystem, filesystem, join, write_bytes_atomic


@dataclass
class TrainConfig:
    data_uri: str
    storage_path: str
    run_name: str
    model: str = "small"  # preset: "small" or "paper"
    model_overrides: dict = field(default_factory=dict)
    augment: dict = field(default_factory=dict)
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
        return cls(**data)

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict({**ModelConfig.preset(self.model).to_dict(), **self.model_overrides})

    def validate(self) -> None:
        if self.val_every % self.checkpoint_every:
            raise ValueError(f"val_every ({self.val_every}) must be a multiple of checkpoint_every "
                             f"({self.checkpoint_every})")
        if self.num_workers < 1 or self.batch_size < 1 or self.steps < 1:
            raise ValueError("num_workers, batch_size and steps must be positive")


def decode_batch(batch: dict) -> dict:
    """Ray Data UDF: raw float16 stacks -> normalised float32; PNG targets -> (3, S, S) in [-1, 1]."""
    from raypipe.chem.depiction import decode_png
    from raypipe.scans.preprocess import normalise

    stacks = np.stack([normalise(s.astype(np.float32)) for s in batch["stack"]])
    targets = np.stack([decode_png(p).transpose(2, 0, 1) for p in batch["target_png"]]).astype(np.float32)
    return {"stack": stacks, "target": targets / 127.5 - 1.0}


def train_func(config: dict) -> None:
    """One Ray Train worker: the DDP training loop."""
    import ray.train
    import ray.train.torch
    import torch

    from raypipe.model.augment import augment
    from raypipe.model.inference import save_model
    from raypipe.model.pix2pix import Pix2Pix

    cfg = TrainConfig(**config["train"])
    model_config = ModelConfig.from_dict(config["model"])
    augment_config = AugmentConfig(**cfg.augment)
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed + rank)
    generator = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank)
    ddp = {"parallel_strategy_kwargs": {"broadcast_buffers": False}}
    model = Pix2Pix(model_config, device, wrap=lambda net: ray.train.torch.prepare_model(net, **ddp))

    step, log, best, best_file = 0, [], None, b""  # best: step and score key of the best generator
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / "state.pt", map_location=device, weights_only=True)
            model.load_state_dict(state["model"])
            step, best = int(state["step"]), state["best"]
            log = [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
            best_file = (Path(folder) / "best.safetensors").read_bytes()
        log.append({"step": step, "event": f"resumed from checkpoint at step {step}"})

    val_rows = []
    if rank == 0:
        val_rows = [dict(zip(b.keys(), values)) for b in ray.train.get_dataset_shard("val").iter_batches(
            batch_size=64, batch_format="numpy") for values in zip(*b.values())][: cfg.val_samples]

    shard = ray.train.get_dataset_shard("train")
    window_start, window_samples, losses = time.perf_counter(), 0, []
    while step < cfg.steps:
        for batch in shard.iter_torch_batches(batch_size=cfg.batch_size, drop_last=True, device=device,
                                              dtypes=torch.float32):
            stack, target = augment(batch["stack"], batch["target"], augment_config, generator)
            losses.append(model.train_step(stack, target))
            step += 1
            window_samples += stack.shape[0]
            metrics: dict = {"step": step}
            if step % cfg.log_every == 0 or step % cfg.checkpoint_every == 0:
                elapsed = time.perf_counter() - window_start
                metrics.update({k: float(np.mean([l[k] for l in losses])) for k in losses[0]})
                metrics["samples_per_s"] = window_samples * ctx.get_world_size() / elapsed
                window_start, window_samples, losses = time.perf_counter(), 0, []
            if rank == 0 and step % cfg.val_every == 0 and val_rows:
                metrics.update(_validate(model, val_rows))
                key = (metrics["val_total"], metrics["val_composition"], _f1(metrics), -metrics["val_L1"])
                if best is None or key > tuple(best["key"]):
                    best = {"step": step, "key": list(key)}
                    metrics["best"] = True
            if rank == 0 and len(metrics) > 1:
                log.append(metrics)
                print(json.dumps(metrics), flush=True)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                with tempfile.TemporaryDirectory() as folder:
                    ckpt = None
                    if rank == 0:
                        torch.save({"model": model.state_dict(), "step": step, "best": best},
                                   Path(folder) / "state.pt")
                        (Path(folder) / "metrics.jsonl").write_text(_jsonl(log))
                        best_path = Path(folder) / "best.safetensors"
                        if metrics.get("best") or not best_file:  # every checkpoint carries the best so far
                            save_model(model.generator, model_config, best_path, name=cfg.run_name,
                                       notes={"step": step, **_scores(metrics)})
                            best_file = best_path.read_bytes()
                        else:
                            best_path.write_bytes(best_file)
                        ckpt = ray.train.Checkpoint.from_directory(folder)
                    ray.train.report({"step": step, **{k: v for k, v in metrics.items() if k != "best"}},
                                     checkpoint=ckpt)
            if step >= cfg.steps:
                break


def _jsonl(log: list[dict]) -> str:
    """The metrics log as JSON lines (``metrics.jsonl``)."""
    return "".join(json.dumps(m) + "\n" for m in log)


def _f1(metrics: dict) -> float:
    """Harmonic mean of the per-atom precision and recall of a validation."""
    p, r = metrics["val_precision"], metrics["val_recall"]
    return 2 * p * r / (p + r) if p + r else 0.0


def _scores(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k.startswith("val_")}


def _validate(model, rows: list[dict]) -> dict:
    """Rank 0: predicted depictions of the val rows, scored against their truth."""
    import torch

    from raypipe.evaluation import score_rows
    from raypipe.model.inference import to_uint8

    net = model.generator
    net.eval()
    with torch.no_grad():
        stacks = torch.as_tensor(np.stack([r["stack"] for r in rows]), device=model.device)
        fake = torch.cat([net(stacks[k:k + 16]) for k in range(0, len(rows), 16)])
        targets = torch.as_tensor(np.stack([r["target"] for r in rows]), device=model.device)
        l1 = float(torch.nn.functional.l1_loss(fake, targets))
    net.train()
    result = score_rows(to_uint8(fake), rows)
    return {"val_L1": l1, "val_total": result["total"], "val_structure": result["structure"],
            "val_composition": result["composition"], "val_precision": result["precision"],
            "val_recall": result["recall"]}


def _datasets(cfg: TrainConfig, storage_options: StorageOptions):
    import ray.data
    from ray.data.expressions import col

    fs, base = filesystem(cfg.data_uri, storage_options)
    shards = ray.data.read_parquet(join(base, "shards"), filesystem=arrow_filesystem(fs),
                                   columns=["stack", "target_png", "split", "atoms", "bonds", "corrugation"])
    train = shards.filter(expr=col("split") == "train").select_columns(["stack", "target_png"]).map_batches(
        decode_batch, batch_size=16)
    if cfg.cache_data:
        train = train.materialize()
    # the val rows are few: read them now, so rank 0 never waits for read tasks while workers hold the CPUs
    val = shards.filter(expr=col("split") == "val").limit(cfg.val_samples).map_batches(
        lambda b: {**decode_batch(b), "atoms": b["atoms"], "bonds": b["bonds"], "corrugation": b["corrugation"]},
        batch_size=16).materialize()
    return {"train": train, "val": val}


def _check_resources(cfg: TrainConfig) -> None:
    """Streaming the train split needs CPUs for Ray Data's read tasks beside the workers'."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 0)
    if not cfg.cache_data and not cfg.use_gpu and cfg.num_workers * cfg.cpus_per_worker >= cpus:
        raise ValueError(f"{cfg.num_workers} workers x {cfg.cpus_per_worker} CPU take all {cpus:g} CPUs of the "
                         "cluster and Ray Data could not read the shards: set cache_data: true (the train split "
                         "is read once into the object store), or use fewer workers/CPUs per worker")


def train(cfg: TrainConfig, storage_options: StorageOptions = None):
    """Run (or resume, by ``run_name``) a training run; returns Ray Train's ``Result``."""
    import ray.train
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg.validate()
    _check_resources(cfg)
    trainer = TorchTrainer(
        train_func,
        train_loop_config={"train": asdict(cfg), "model": cfg.model_config().to_dict()},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker}),
        datasets=_datasets(cfg, storage_options),
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        run_config=RunConfig(
            name=cfg.run_name, storage_path=_storage_root(cfg.storage_path),
            storage_filesystem=_storage_fs(cfg.storage_path, storage_options),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is not None:
        _export(cfg, result.checkpoint, storage_options)
    return result


def _storage_root(storage_path: str) -> str:
    return storage_path.removeprefix("s3://") if storage_path.startswith("s3://") else os.path.abspath(storage_path)


def _storage_fs(storage_path: str, storage_options: StorageOptions):
    if not storage_path.startswith("s3://"):
        return None
    return arrow_filesystem(filesystem(storage_path, storage_options)[0])


def _export(cfg: TrainConfig, checkpoint, storage_options: StorageOptions) -> None:
    """Write metrics.jsonl, metrics.png and model.safetensors (best generator) beside the checkpoints."""
    fs, base = filesystem(cfg.storage_path, storage_options)
    run = join(base, cfg.run_name)
    with checkpoint.as_directory() as folder:
        folder = Path(folder)
        log = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        write_bytes_atomic(fs, join(run, "model.safetensors"), (folder / "best.safetensors").read_bytes())
    write_bytes_atomic(fs, join(run, "metrics.jsonl"), _jsonl(log).encode())
    write_bytes_atomic(fs, join(run, "metrics.png"), plot_metrics(log))


def plot_metrics(log: list[dict]) -> bytes:
    """Losses and validation scores against steps, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in ("loss_D", "loss_G_adv", "loss_G_L1"):
        points = [(m["step"], m[key]) for m in log if key in m]
        if points:
            ax1.plot(*zip(*points), label=key)
    for key in ("val_total", "val_composition", "val_precision", "val_recall", "val_L1"):
        points = [(m["step"], m[key]) for m in log if key in m]
        if points:
            ax2.plot(*zip(*points), marker="o", label=key)
    ax1.set_xlabel("step"), ax2.set_xlabel("step"), ax1.set_yscale("log")
    ax1.legend(), ax2.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()
