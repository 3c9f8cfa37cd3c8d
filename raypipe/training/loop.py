"""The plain torch training loop: one process, CPU or one GPU, no Ray.

The same :class:`~raypipe.training.pix2pix.Pix2Pix` step, augmentation, validation and run state as the Ray
Train job (:mod:`raypipe.pipelines.train`), for the places Ray does not fit: a long background run on a
small machine (Ray's workers would hold every CPU), or a lent GPU machine where Ray cannot be installed.
``jobs/train_local.py`` is its command line.

Run folder ``storage_path/run_name/`` (local)::

    checkpoints/step-0001200/       state.pt (networks, optimisers, step, best), metrics.jsonl, best.safetensors
    checkpoints/LATEST              the name of the newest complete checkpoint (written last, atomically)
    metrics.jsonl, metrics.png      the log and its plot (rewritten at every checkpoint)
    model.safetensors               the best validated generator so far

Running again with the same run name resumes from ``LATEST`` (a kill loses at most ``checkpoint_every``
steps); ``steps`` may be raised to continue. ``init_from`` starts a new run from a model file's weights.
Validation needs RDKit (graph extraction); where it is not installed (a bare GPU machine), validation
records only ``val_loss`` (the fraction of wrong molecule pixels) and the best model is chosen by it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path


from raypipe.training.run import RunState, TrainConfig, init_generator, plot_metrics


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def train_local(cfg: TrainConfig, *, rows_val: list[dict] | None = None, stream=None, progress=print) -> dict:
    """Run (or resume) ``cfg`` in this process; returns the last metrics with ``best`` and ``run``.

    ``rows_val`` (validation rows with truth) and ``stream`` (an iterable of (stack, target) numpy
    batches) default to the shards under ``cfg.data_uri`` (:mod:`raypipe.training.data`).
    """
    import torch

    from raypipe.training.data import ShardStream, check_grid, fixed_rows
    from raypipe.training.pix2pix import Pix2Pix
    from raypipe.training.validation import validator

    cfg.check()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _device(cfg.device)
    model_config, augment_config = cfg.model_config(), cfg.augment_config()
    if stream is None:
        check_grid(cfg.data_uri, model_config)
    run = Path(cfg.storage_path) / cfg.run_name
    checkpoints = run / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(__import__("json").dumps(
        {"train": cfg.__dict__, "model": model_config.to_dict(), "augment": augment_config.to_dict()}, indent=2))

    torch.manual_seed(cfg.seed)
    model = Pix2Pix(model_config, device, trainable=cfg.trainable)
    state = RunState()
    latest = checkpoints / "LATEST"
    if latest.exists():
        state, saved = RunState.restore(checkpoints / latest.read_text().strip(), device)
        model.load_state_dict(saved)
        progress(f"train: resumed {cfg.run_name} at step {state.step}")
    elif cfg.init_from:
        init_generator(model.G, cfg.init_from)
        state.record({"step": 0, "event": f"initialised from {cfg.init_from}"}, echo=False)
        progress(f"train: {cfg.run_name} starts from the weights of {cfg.init_from}")

    rows_val = rows_val if rows_val is not None else fixed_rows(cfg.data_uri, "val", cfg.val_samples)
    validate = validator()
    rng = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + state.step)
    centres = model_config.window if model_config.centres else None
    stream = stream if stream is not None else ShardStream(cfg.data_uri, "train", batch_size=cfg.batch_size,
                                                           seed=cfg.seed + state.step, centres=centres,
                                                           counts=model_config.counts, shares=cfg.data_shares)
    progress(f"train: {cfg.run_name} on {device}, {cfg.steps} steps of {cfg.batch_size}, "
             f"{len(rows_val)} validation rows, head {model_config.head}")
    batches = iter(stream)
    try:
        _loop(cfg, state, model, batches, augment_config, model_config, rng, rows_val, validate, run)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # stops and joins the shard reader thread
    return {"run": str(run), **(state.log[-1] if state.log else {}), "best": state.best}


def _loop(cfg, state, model, batches, augment_config, model_config, rng, rows_val, validate, run) -> None:
    import torch

    from raypipe.training.run import Steps

    device = model.device
    started = time.perf_counter()
    step = Steps(cfg, state, model, augment_config, rng)
    while state.step < cfg.steps:
        stack_np, target_np = next(batches)
        last = state.step + 1 == cfg.steps or bool(cfg.max_seconds and time.perf_counter() - started > cfg.max_seconds)
        metrics = step(torch.as_tensor(stack_np, device=device), torch.as_tensor(target_np, device=device), last=last)
        if (state.step % cfg.val_every == 0 or last) and rows_val:
            metrics.update(validate(model.generator, model_config, rows_val))
            state.consider(metrics, model.generator, model_config, cfg.run_name)
            step.restart_clock()  # validation time is not training throughput
        if len(metrics) > 1:
            state.record(metrics)
        if state.step % cfg.checkpoint_every == 0 or last:
            _checkpoint(run, state, model)
        if last:
            break


def _checkpoint(run: Path, state: RunState, model) -> None:
    """A complete checkpoint folder, then LATEST pointing to it, then the older folders removed."""
    checkpoints = run / "checkpoints"
    name = f"step-{state.step:07d}"
    tmp = checkpoints / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    state.save(tmp, model.state_dict())
    final = checkpoints / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _write_atomic(checkpoints / "LATEST", name.encode())
    for old in checkpoints.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    _write_atomic(run / "metrics.jsonl", state.metrics_jsonl().encode())
    if state.best_file:
        _write_atomic(run / "model.safetensors", state.best_file)
    try:
        _write_atomic(run / "metrics.png", plot_metrics(state.log))
    except ImportError:  # no matplotlib (a bare GPU machine): the log is enough
        pass
