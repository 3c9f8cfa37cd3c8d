"""The generator's 3D stem in channels-last-3d layout (the default, ``STEM_LAYOUT``) against the standard
layout: inference and training speed on this machine's CPU, same weights, in one run.

Usage: python bench/bench_layout.py [--presets small] [--threads 1,2] [--batch 16] [--repeats 3]

Inference: ``Model.predict`` of the shipped model's network (ms per stack, batch ``--batch``). Training:
one generator step (forward, a cross-entropy on random classes, backward, Adam) per sample. The outputs
of both layouts are compared (largest absolute difference of the head's output).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from raypipe.model.config import ModelConfig
from raypipe.model.inference import Model, load_model
from raypipe.model.networks import STEM_LAYOUT, define_G

LAYOUTS = {"channels_last_3d": torch.channels_last_3d, "standard": torch.contiguous_format}


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up (oneDNN picks and caches its kernels)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def inference(generator, config, batch: int, repeats: int) -> tuple[float, np.ndarray]:
    model = Model.from_generator(generator.eval(), config)
    x = np.random.default_rng(0).normal(size=(batch, *model.input_shape)).astype(np.float32)
    seconds = _timed(lambda: model.predict(x), repeats)
    with torch.no_grad():
        out = generator(torch.from_numpy(x)).numpy()
    return 1000 * seconds / batch, out


def training(generator, batch: int, repeats: int) -> float:
    generator.train()
    config = generator.config
    optimiser = torch.optim.Adam(generator.parameters(), lr=1e-4)
    x = torch.randn(batch, config.n_slices, config.size, config.size)
    target = torch.randint(0, generator.head.channels, (batch, config.size, config.size))

    def step() -> None:
        loss = F.cross_entropy(generator(x), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return 1000 * _timed(step, repeats) / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", default="shipped", help="comma-separated: shipped (the shipped model's "
                                                              "network and weights), small, paper")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("out/bench-layout.json"))
    args = parser.parse_args()

    result = {"default_layout": str(STEM_LAYOUT), "batch": args.batch, "presets": {}}
    for preset in args.presets.split(","):
        if preset == "shipped":
            shipped = load_model(device="cpu")
            config, state = shipped.config, shipped.generator.state_dict()
        else:
            config = ModelConfig.preset(preset)
            state = define_G(config).state_dict()
        figures, outputs = {}, {}
        for name, layout in LAYOUTS.items():
            generator = define_G(config).use_stem_layout(layout)
            generator.load_state_dict(state)
            row = {}
            for threads in [int(t) for t in args.threads.split(",")]:
                torch.set_num_threads(threads)
                ms, outputs[name] = inference(generator, config, args.batch, args.repeats)
                row[f"inference_ms_per_stack_{threads}_threads"] = round(ms, 2)
            torch.set_num_threads(1)
            row["training_ms_per_sample_1_thread"] = round(training(generator, args.batch, max(1, args.repeats - 1)), 2)
            figures[name] = row
            print(preset, name, row, flush=True)
        fast, slow = figures["channels_last_3d"], figures["standard"]
        figures["speed-up"] = {k: round(slow[k] / fast[k], 2) for k in fast}
        figures["largest_output_difference"] = float(np.abs(outputs["channels_last_3d"] - outputs["standard"]).max())
        result["presets"][preset] = figures
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
