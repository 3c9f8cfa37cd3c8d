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

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path


from raypipe.model.config import ModelConfig
from raypipe.training.run import RunState, TrainConfig, init_generator, plot_metrics
from raypipe.storage import StorageOptions, arrow_filesystem, filesystem, is_remote, join, write_bytes_atomic

__all__ = ["TrainConfig", "decode_batch", "train", "train_func", "plot_metrics"]


def decode_batch(batch, centres=None, counts: bool = False) -> dict:
    """Ray Data UDF on a pyarrow batch of shard rows (plain or compact): raw stacks -> z-scored float32 (the
    median comes after augmentation, as in :func:`raypipe.training.augment.augment`); PNG targets ->
    (3, S, S) in [-1, 1], with the centre target as a fourth channel when ``centres`` (the model's window)
    is given, and the formula's count planes after them with ``counts``
    (:func:`raypipe.training.data.decode_targets`)."""
    from raypipe.simulation.schema import read_stacks
    from raypipe.training.data import decode_targets, zscore_stacks

    return {"stack": zscore_stacks(read_stacks(batch)),
            "target": decode_targets(batch["target_png"].to_pylist(), centres,
                                     batch["formula"].to_pylist() if counts else None)}


def train_func(config: dict) -> None:
    """One Ray Train worker: the DDP training loop."""
    import ray.train
    import ray.train.torch
    import torch

    from raypipe.training.augment import AugmentConfig
    from raypipe.training.pix2pix import Pix2Pix
    from raypipe.training.run import Steps
    from raypipe.training.validation import validate

    cfg = TrainConfig(**config["train"])
    model_config = ModelConfig.from_dict(config["model"])
    augment_config = AugmentConfig.from_dict(config["augment"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed + rank)
    rng = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank)
    ddp = {"parallel_strategy_kwargs": {"broadcast_buffers": False}}
    model = Pix2Pix(model_config, device, wrap=lambda net: ray.train.torch.prepare_model(net, **ddp))

    state = RunState()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state, saved = RunState.restore(folder, device)
            model.load_state_dict(saved)
    elif cfg.init_from:
        init_generator(model.G, cfg.init_from)

    val_rows = []
    if rank == 0:
        val_rows = [dict(zip(b.keys(), values)) for b in ray.train.get_dataset_shard("val").iter_batches(
            batch_size=64, batch_format="numpy") for values in zip(*b.values())][: cfg.val_samples]

    shard = ray.train.get_dataset_shard("train")
    step = Steps(cfg, state, model, augment_config, rng, world_size=ctx.get_world_size())
    while state.step < cfg.steps:
        for batch in shard.iter_torch_batches(batch_size=cfg.batch_size, drop_last=True, device=device,
                                              dtypes=torch.float32):
            metrics = step(batch["stack"], batch["target"])
            if rank == 0 and state.step % cfg.val_every == 0 and val_rows:
                metrics.update(validate(model.generator, model_config, val_rows))
                state.consider(metrics, model.generator, model_config, cfg.run_name)
                step.restart_clock()
            if rank == 0 and len(metrics) > 1:
                state.record(metrics)
            if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
                with tempfile.TemporaryDirectory() as folder:
                    ckpt = None
                    if rank == 0:
                        if not state.best_file:  # every checkpoint carries a model file
                            state.consider({"step": state.step, "val_total": -1.0}, model.generator,
                                           model_config, cfg.run_name)
                        state.save(folder, model.state_dict())
                        ckpt = ray.train.Checkpoint.from_directory(folder)
                    ray.train.report({"step": state.step, **{k: v for k, v in metrics.items() if k != "best"}},
                                     checkpoint=ckpt)
            if state.step >= cfg.steps:
                break


def _datasets(cfg: TrainConfig, storage_options: StorageOptions):
    import ray.data
    from ray.data.expressions import col

    from raypipe.simulation.schema import stack_columns
    from raypipe.training.data import data_uris, first_shard_schema

    uris = data_uris(cfg.data_uri)  # several data sets: one pool of shards (check_grid: the same storage form)
    stack = stack_columns(first_shard_schema(uris[0], storage_options))
    parts = []
    for uri in uris:
        fs, base = filesystem(uri, storage_options)
        parts.append(ray.data.read_parquet(join(base, "shards"), filesystem=arrow_filesystem(fs)).select_columns(
            [*stack, "target_png", "formula", "split", "atoms", "bonds", "corrugation"]))
    shards = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    model_config = cfg.model_config()
    centres = model_config.window if model_config.centres else None
    train = shards.filter(expr=col("split") == "train").select_columns([*stack, "target_png", "formula"]).map_batches(
        decode_batch, batch_size=16, batch_format="pyarrow",
        fn_kwargs={"centres": centres, "counts": model_config.counts})
    if cfg.cache_data:
        train = train.materialize()
    # the val rows are few: read them now, so rank 0 never waits for read tasks while workers hold the CPUs
    val = shards.filter(expr=col("split") == "val").limit(cfg.val_samples).map_batches(
        lambda b: {**decode_batch(b), "target_png": b["target_png"].to_pylist(), "atoms": b["atoms"].to_pylist(),
                   "bonds": b["bonds"].to_pylist(), "corrugation": b["corrugation"].to_numpy()},
        batch_size=16, batch_format="pyarrow").materialize()
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
    """Run (or resume, by ``run_name``) a training run on Ray Train; returns Ray Train's ``Result``.

    Checks on the driver first (a ValueError before any worker starts): the config
    (:meth:`TrainConfig.check`: steps, intervals, augmentation keys, ``init_from``), the shards' grid
    against the model's, and the cluster's CPUs against the workers'. ``storage_options``: s3fs options
    for ``data_uri`` and ``storage_path``. At the end ``metrics.jsonl``, ``metrics.png`` and
    ``model.safetensors`` are written beside the checkpoints."""
    import ray.train
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raypipe.training.data import check_grid

    cfg.check()
    if cfg.data_shares is not None:
        raise ValueError("data_shares runs in the plain loop (jobs/train_local.py), not on Ray Train")
    if cfg.trainable != "all":
        raise ValueError(f"trainable {cfg.trainable!r} runs in the plain loop (jobs/train_local.py), not on Ray Train")
    check_grid(cfg.data_uri, cfg.model_config(), storage_options)
    _check_resources(cfg)
    trainer = TorchTrainer(
        train_func,
        train_loop_config={"train": asdict(cfg), "model": cfg.model_config().to_dict(),
                           "augment": cfg.augment_config().to_dict()},
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
    return storage_path.removeprefix("s3://") if is_remote(storage_path) else os.path.abspath(storage_path)


def _storage_fs(storage_path: str, storage_options: StorageOptions):
    if not is_remote(storage_path):
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
    write_bytes_atomic(fs, join(run, "metrics.jsonl"), RunState(log=log).metrics_jsonl().encode())
    write_bytes_atomic(fs, join(run, "metrics.png"), plot_metrics(log))
