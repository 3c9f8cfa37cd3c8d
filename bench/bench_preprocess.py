"""Preprocessing time per stack (one core) on the bundled sample stacks, and the 3x3 median filter alone:
scipy's ``ndimage.median_filter`` against raypipe's sorting network (``median3``), on the same images in
one run (the ratio is the figure; both give the same values, ``tests/test_preprocess.py``). scipy's time
depends on the data (its selection is quicker on smooth images), so both are timed on the clean samples
and on copies with 5 % noise added, as ``bench/bench_label.py`` labels them and as experiments are.

Usage: python bench/bench_preprocess.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from raypipe.scans.archive import read_archive
from raypipe.scans.preprocess import median3, preprocess
from raypipe.scans.stack import ScanStack
from raypipe.resources import EXAMPLES

SAMPLE = EXAMPLES / "scans" / "sample_scans.h5"


def per_call_ms(fn, items, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        for item in items:
            fn(item)
    return 1000 * (time.perf_counter() - start) / (repeats * len(items))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    clean = list(read_archive(SAMPLE))
    rng = np.random.default_rng(0)
    noisy = [ScanStack(s.images + rng.normal(0, 0.05 * float(s.images.std()), s.images.shape).astype(np.float32),
                       s.heights, s.metadata, scan_id=s.scan_id) for s in clean]
    result = {"stacks": len(clean)}
    for name, stacks in (("clean", clean), ("noisy", noisy)):
        inputs = [preprocess(s, median=1) for s in stacks]  # (10, 128, 128) on the window, before the median
        scipy_ms = per_call_ms(lambda x: ndimage.median_filter(x, size=(1, 3, 3)), inputs, args.repeats)
        network_ms = per_call_ms(median3, inputs, args.repeats)
        result[name] = {
            "median_scipy_ms": round(scipy_ms, 2), "median_network_ms": round(network_ms, 2),
            "median_speedup": round(scipy_ms / network_ms, 1),
            "preprocess_ms_per_stack": round(per_call_ms(preprocess, stacks, args.repeats), 2),
            "preprocess_with_scipy_median_ms_per_stack": round(per_call_ms(
                lambda s: ndimage.median_filter(preprocess(s, median=1), size=(1, 3, 3)), stacks, args.repeats), 2)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
