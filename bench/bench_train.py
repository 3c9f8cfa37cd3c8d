"""Training throughput (samples per second) of the Ray Train job: 1 worker with every core vs 2 workers
with half each, same model and data, in one run; and the parameter counts and FLOPs of both presets.

Usage: python bench/bench_train.py [--data raypipe/examples/sim-sample] [--model small] [--steps 40] [--batch 8]

Throughput is the job's own figure (samples of every worker per second over the last logging window,
so start-up and dataset reading are left out).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import ray

from raypipe.model.config import ModelConfig
from raypipe.model.networks import count_parameters, define_D, define_G, flops_per_sample
from raypipe.pipelines.train import TrainConfig, train
from raypipe.resources import EXAMPLES

SAMPLE = EXAMPLES / "sim-sample"


def model_sizes() -> dict:
    """Parameters and forward GFLOPs per sample of G and D for each preset."""
    import torch

    sizes = {}
    for preset in ("paper", "small"):
        config = ModelConfig.preset(preset)
        x = torch.randn(1, config.n_slices, config.size, config.size)
        G, D = define_G(config), define_D(config)
        y = G.eval()(x)
        sizes[preset] = {"G_params_M": round(count_parameters(G) / 1e6, 2),
                         "G_GFLOPs": round(flops_per_sample(G, x) / 1e9, 2),
                         "D_params_M": round(count_parameters(D) / 1e6, 2),
                         "D_GFLOPs": round(flops_per_sample(D, x, y) / 1e9, 3)}
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(SAMPLE))
    parser.add_argument("--model", default="small", choices=["small", "paper"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8, help="global batch (split over the workers)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker")
    args = parser.parse_args()
    cpus = os.cpu_count() or 2
    ray.init(include_dashboard=False, log_to_driver=False)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            cfg = TrainConfig(data_uri=args.data, storage_path=tmp, run_name=f"bench-{workers}", model=args.model,
                              num_workers=workers, cpus_per_worker=1 if args.gpu else cpus / workers,
                              use_gpu=args.gpu, batch_size=args.batch // workers, steps=args.steps,
                              checkpoint_every=args.steps, val_every=args.steps, val_samples=4,
                              log_every=args.steps // 2, cache_data=True)
            results[f"{workers}_worker_samples_per_s"] = round(train(cfg).metrics["samples_per_s"], 2)
    results["2_vs_1"] = round(results["2_worker_samples_per_s"] / results["1_worker_samples_per_s"], 2)
    print(json.dumps({"machine": f"{cpus} cores" + (", GPUs" if args.gpu else ""), "model": args.model,
                      "global_batch": args.batch, **results, "model_sizes": model_sizes()}, indent=2))


if __name__ == "__main__":
    main()
