"""The two generator heads on the same shards, steps and seed: per-atom F1 and total against steps.

    python bench/bench_heads.py --data out/sim/catalog-r4 --steps 400 --val-every 100 --val-samples 128

Variants (same small network, optimiser, learning rate, input dropout, batch, augmentation and seed;
only the head and its loss differ):
- ``rgb``: the published head, adversarial + 100 x L1 (molecule pixels weighted 10x, as the previous
  shipped model needed);
- ``palette``: 11 logits per pixel, class-weighted cross-entropy + 0.5 x adversarial on the
  softmax-weighted palette image;
- ``palette-dice``: the same + a soft Dice term;
- ``palette-focal``: focal cross-entropy (gamma 2) instead of the plain one;
- ``palette-noadv``: cross-entropy alone (no discriminator).
Every variant is validated on one fixed set of val rows (the first ``--val-samples`` of the val split in
shard order). Prints a table and writes ``--out`` (JSON with every validation).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = {
    "rgb": ("small", {"l1_foreground_weight": 10.0}),
    "palette": ("small-palette", {}),
    "palette-dice": ("small-palette", {"lambda_dice": 1.0}),
    "palette-focal": ("small-palette", {"focal_gamma": 2.0}),
    "palette-noadv": ("small-palette", {"lambda_adv": 0.0}),
}
COMMON = {"lr": 5e-4, "input_dropout": 0.1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="out/sim/catalog-r4")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--val-every", type=int, default=100)
    parser.add_argument("--val-samples", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--runs", default="out/bench-heads")
    parser.add_argument("--out", type=Path, default=Path("out/bench-heads/results.json"))
    args = parser.parse_args()

    from raypipe.training.data import fixed_rows
    from raypipe.training.loop import train_local
    from raypipe.training.run import TrainConfig, f1

    rows = fixed_rows(args.data, "val", args.val_samples)
    results = {}
    for name in args.variants.split(","):
        preset, overrides = VARIANTS[name]
        cfg = TrainConfig(data_uri=args.data, storage_path=args.runs, run_name=f"{name}-s{args.seed}-{args.steps}",
                          model=preset, model_overrides={**COMMON, **overrides},
                          augment={"preset": "experimental"}, batch_size=args.batch_size, steps=args.steps,
                          checkpoint_every=args.val_every, val_every=args.val_every, val_samples=args.val_samples,
                          log_every=args.val_every, seed=args.seed)
        start = time.perf_counter()
        train_local(cfg, rows_val=rows, progress=lambda *_: None)
        seconds = time.perf_counter() - start
        log = [json.loads(line) for line in (Path(args.runs) / cfg.run_name / "metrics.jsonl").read_text().splitlines()]
        vals = [{"step": m["step"], "total": m["val_total"], "f1": f1(m), "precision": m["val_precision"],
                 "recall": m["val_recall"], "pixel_error": m["val_loss"], "samples_per_s": m.get("samples_per_s")}
                for m in log if "val_total" in m]
        results[name] = {"seconds": seconds, "validations": vals}
        print(f"{name}: {seconds:.0f} s; " + "; ".join(f"step {v['step']}: F1 {v['f1']:.3f} total {v['total']:.3f}"
                                                    for v in vals), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": len(rows), "steps": args.steps, "seed": args.seed,
                                    "batch_size": args.batch_size, "results": results}, indent=2))
    steps = sorted({v["step"] for r in results.values() for v in r["validations"]})
    print("\n| variant | " + " | ".join(f"step {s}: F1 / total / pixel err" for s in steps) + " | s |")
    print("|---|" + "---|" * (len(steps) + 1))
    for name, r in results.items():
        by_step = {v["step"]: v for v in r["validations"]}
        cells = [f"{by_step[s]['f1']:.3f} / {by_step[s]['total']:.3f} / {by_step[s]['pixel_error']:.3f}"
                 if s in by_step else "" for s in steps]
        print(f"| {name} | " + " | ".join(cells) + f" | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
