"""Scale estimation: on simulated stacks whose field of view is withheld and whose framing is off by
0.7-1.4x, how often the test-time search finds the right scale, and how much accuracy it recovers.

    python bench/bench_scale.py --data out/sim/heldout-test --n 40 [--model FILE]

Each stack (18 Å window) is re-framed to show 18 x s Å (s > 1: padded with its border, the molecule looks
smaller; s < 1: cropped, it looks larger) and its fov removed, as an exported image of unknown scale.
Then: **naive** (fov unknown: the image fitted to the window), **search** (``raypipe.identify.scale``), **true**
(fov = 18 s given). Right scale: the chosen fov within 10 % of 18 s. Accuracy: per-atom F1 and total
against the truth, read on the model's window.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SCALES = (0.7, 0.85, 1.0, 1.2, 1.4)


def reframe(images: np.ndarray, s: float) -> np.ndarray:
    n, h, w = images.shape
    new = int(round(h * s))
    if s >= 1:
        pad = (new - h) // 2
        return np.pad(images, ((0, 0), (pad, new - h - pad), (pad, new - h - pad)), mode="edge")
    start = (h - new) // 2
    return images[:, start:start + new, start:start + new]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="out/sim/heldout-test")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", type=Path, default=Path("out/bench-scale.json"))
    args = parser.parse_args()
    from raypipe.chem.molgraph import MolGraph
    from raypipe.model.reading import read_prediction
    from raypipe.chem.scoring import score
    from raypipe.model.inference import load_model
    from raypipe.identify.scale import estimate_fov
    from raypipe.scans.preprocess import preprocess
    from raypipe.scans.stack import ScanStack
    from raypipe.simulation.export import read_shard_rows

    model = load_model(args.model)
    window = model.config.window
    rows = list(read_shard_rows(args.data, limit=args.n))
    out: dict = {"model": model.tag, "n": len(rows), "by_scale": {}}

    def read(stack):
        x = preprocess(stack, n_slices=model.config.n_slices, window=window)[None]
        return read_prediction(model.infer(x), window)[0].graph

    for s in SCALES:
        found, f1 = [], {"naive": [], "search": [], "true": []}
        total = {k: [] for k in f1}
        for row in rows:
            truth = MolGraph.from_rows(row["atoms"], row["bonds"])
            images = reframe(row["stack"].astype(np.float32), s)
            base = {"format": "ppafm", "source": "bench"}
            unknown = ScanStack(images, np.arange(len(images)) * 0.1, dict(base, fov=None))
            fov, _ = estimate_fov(unknown, model)
            found.append(abs(fov - 18 * s) <= 0.1 * 18 * s)
            for name, fov_used in (("naive", None), ("search", fov), ("true", 18 * s)):
                meta = dict(base, fov=None if fov_used is None else [fov_used, fov_used])
                result = score(read(ScanStack(images, np.arange(len(images)) * 0.1, meta)), truth)
                f1[name].append(2 * result.precision * result.recall / max(result.precision + result.recall, 1e-9))
                total[name].append(result.total)
        out["by_scale"][str(s)] = {"right_scale": float(np.mean(found)),
                                   **{f"f1_{k}": float(np.mean(v)) for k, v in f1.items()},
                                   **{f"total_{k}": float(np.mean(v)) for k, v in total.items()}}
        print(s, out["by_scale"][str(s)], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
