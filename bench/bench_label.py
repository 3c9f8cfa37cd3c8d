"""Batch labelling: end-to-end stacks per second vs a bare loop over the same model and data, and peak
memory of the whole Ray session for a small and a 10x larger archive.

Usage: python bench/bench_label.py [--small 100] [--large 1000] [--model FILE]

The archive is made from the bundled sample stacks (each copy with its own noise, so every stack is
distinct), 100 stacks per HDF5 file. The bare loop runs in this process with every core; the pipeline
runs on a local Ray with the same cores. Memory: the summed resident memory (PSS where available) of
the driver and every Ray process, sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from raypipe.scans.archive import read_archive, write_archive
from raypipe.scans.stack import ScanStack

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "scans" / "sample_scans.h5"


def make_archive(folder: Path, n: int) -> Path:
    base = list(read_archive(SAMPLE))
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for start in range(0, n, 100):
        stacks = []
        for k in range(start, min(start + 100, n)):
            src = base[k % len(base)]
            noisy = src.images + rng.normal(0, 0.05 * float(src.images.std()), src.images.shape).astype(np.float32)
            stacks.append(ScanStack(noisy, src.heights, dict(src.metadata, name=f"s{k:05d}"), scan_id=f"s{k:05d}"))
        write_archive(folder / f"part{start // 100:03d}.h5", stacks)
    return folder


def bare_loop(folder: Path, model_path: str | None) -> float:
    from raypipe.chem.depiction import encode_png
    from raypipe.chem.graph import extract_graph
    from raypipe.model.inference import load_model
    from raypipe.scans.preprocess import preprocess

    model = load_model(model_path, device="cpu")
    start, n = time.perf_counter(), 0
    for path in sorted(folder.glob("*.h5")):
        stacks = list(read_archive(path))
        for k in range(0, len(stacks), 16):
            batch = stacks[k:k + 16]
            for depiction in model.predict(np.stack([preprocess(s) for s in batch])):
                extract_graph(depiction)
                encode_png(depiction)
                n += 1
    return n / (time.perf_counter() - start)


def _memory_of_session() -> int:
    """Bytes: the driver plus every process whose command line names Ray."""
    total = 0
    for status in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (status / "cmdline").read_bytes()
            if status.name != str(os.getpid()) and b"ray" not in cmd:
                continue
            rollup = status / "smaps_rollup"
            text = rollup.read_text() if rollup.exists() else (status / "status").read_text()
            key = "Pss:" if "Pss:" in text else "VmRSS:"
            total += int(next(line for line in text.splitlines() if line.startswith(key)).split()[1]) * 1024
        except (OSError, StopIteration, ValueError):
            continue
    return total


def pipeline(folder: Path, model_path: str | None) -> tuple[float, int]:
    from raypipe.pipelines.predict import predict_dataset

    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _memory_of_session())
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start, n = time.perf_counter(), 0
    for batch in predict_dataset(str(folder), model=model_path).iter_batches(batch_size=64):
        n += len(batch["status"])
    rate = n / (time.perf_counter() - start)
    stop.set()
    sampler.join()
    return rate, peak[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=1000)
    parser.add_argument("--model", default=None, help="model file (default: the shipped model)")
    args = parser.parse_args()
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        small = make_archive(Path(tmp) / "small", args.small)
        large = make_archive(Path(tmp) / "large", args.large)
        bare = bare_loop(small, args.model)
        ray.init(include_dashboard=False, log_to_driver=False)
        pipeline(small, args.model)  # warm-up: workers started, model files cached
        rate_small, mem_small = pipeline(small, args.model)
        rate_large, mem_large = pipeline(large, args.model)
    print(json.dumps({
        "machine": f"{os.cpu_count()} cores, CPU only",
        "bare_loop_stacks_per_s": round(bare, 2),
        f"pipeline_stacks_per_s_{args.small}": round(rate_small, 2),
        f"pipeline_stacks_per_s_{args.large}": round(rate_large, 2),
        "pipeline_vs_bare_loop": round(rate_large / bare, 2),
        f"peak_session_memory_MiB_{args.small}": round(mem_small / 2**20),
        f"peak_session_memory_MiB_{args.large}": round(mem_large / 2**20),
    }, indent=2))


if __name__ == "__main__":
    main()
