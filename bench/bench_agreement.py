"""Element agreement (:mod:`raypipe.chem.agreement`) on validation stacks: what reading the heavy atoms'
elements together with a count does to the molecules read exactly.

    python bench/bench_agreement.py --data ../shared/sim/catalog-r4-tail2 --n 256
    python bench/bench_agreement.py --data ../shared/sim/catalog-r4-tail2 --model /work/train/counts-1/model.safetensors

One prediction of each of the first ``--n`` rows of the ``--split`` split (4 views unless ``--views``), then
the same prediction read several ways, in this run: alone (every atom its most voted element); with the
true formula as a known formula relabelling only, at several penalties, and as ``ElementCounts.known``
gives it (what a sidecar's ``formula`` does: the number of heavy atoms and the hydrogens may change too;
``--grid``: under several of the heavy atoms' constants); and, for a model with a count output, with its counts at several penalties. Reports, for each,
the fraction of molecules read exactly (``total``), their heavy-atom formulas right, per-atom precision and
recall; and the count output's own figures (``score_counts``). Validation rows only: never a test split.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_reading import add_prediction_arguments, validation_prediction  # noqa: E402

PENALTIES = (0.5, 1.0, 2.0, 3.0, 5.0)


def heavy(formula: str) -> str:
    """A Hill formula without its hydrogens."""
    import re

    return re.sub(r"H\d*(?![a-z])", "", formula)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_prediction_arguments(parser)
    parser.add_argument("--grid", action="store_true",
                        help="also a known formula under a grid of MISSING, DROP_WEIGHT and WEAK_COST")
    args = parser.parse_args(argv)

    import raypipe.chem.agreement as agreement
    import raypipe.chem.pixels as pixels
    from raypipe.chem.agreement import KNOWN_PENALTY, ElementCounts, agree_elements
    from raypipe.chem.graph import read_graph
    from raypipe.chem.molecule import hill_formula
    from raypipe.training.validation import score_counts, score_rows

    model, rows, prediction = validation_prediction(args, "bench_agreement", "agreement needs")
    for row in rows:
        row["formula"] = hill_formula([a["element"] for a in row["atoms"]])
    window = model.config.window

    def read(counts_of, penalty=None) -> dict:
        pixels.agree_elements = partial(agree_elements, penalty=penalty)
        try:
            graphs = [read_graph(d, window, prediction.centre_map(k), counts_of(k))
                      for k, d in enumerate(prediction.depictions)]
        finally:
            pixels.agree_elements = agree_elements
        scores = score_rows(graphs, rows)
        right = np.mean([heavy(g.formula) == heavy(r["formula"]) for g, r in zip(graphs, rows)])
        return {"total": scores["total"], "heavy_formula": float(right), "precision": scores["precision"],
                "recall": scores["recall"]}

    results = {"model": model.tag, "views": model.views, "n": len(rows), "data": args.data, "split": args.split,
               "alone": read(lambda k: None)}
    known = [ElementCounts.known(r["formula"]) for r in rows]
    results["known"] = {p: read(lambda k: ElementCounts(known[k].counts, atoms=False), p) for p in PENALTIES}
    results["known_atoms"] = read(lambda k: known[k])
    if args.grid:
        defaults = (agreement.MISSING, agreement.DROP_WEIGHT, agreement.WEAK_COST)
        results["grid"] = {}
        for missing in (1.0, 2.0, 3.0):
            for drop in (1.5, 3.0, 6.0):
                for weak in (0.5, 1.0, 2.0):
                    agreement.MISSING, agreement.DROP_WEIGHT, agreement.WEAK_COST = missing, drop, weak
                    results["grid"][f"{missing:g},{drop:g},{weak:g}"] = r = read(lambda k: known[k])
                    print(f"  MISSING {missing:g} DROP_WEIGHT {drop:g} WEAK_COST {weak:g}: total {r['total']:.3f} "
                          f"heavy formula {r['heavy_formula']:.3f}", flush=True)
        agreement.MISSING, agreement.DROP_WEIGHT, agreement.WEAK_COST = defaults
    if model.has_counts:
        results["counts"] = {p: read(prediction.count_of, p) for p in PENALTIES}
        results["count_output"] = score_counts(prediction.counts, rows)
    line = lambda name, r: print(f"  {name:<28} total {r['total']:.3f}  heavy formula {r['heavy_formula']:.3f}  "  # noqa: E731
                                 f"P {r['precision']:.3f}  R {r['recall']:.3f}")
    line("alone", results["alone"])
    for p, r in results["known"].items():
        line(f"known formula, penalty {p:g}", r)
    line(f"known, atoms and H ({KNOWN_PENALTY:g})", results["known_atoms"])
    for p, r in results.get("counts", {}).items():
        line(f"count output, penalty {p:g}", r)
    if "count_output" in results:
        c = results["count_output"]
        print(f"  count output: formula {c['counts_formula']:.3f}, heavy atoms {c['counts_heavy']:.3f}, mean absolute "
              "error " + ", ".join(f"{e} {v:.2f}" for e, v in c["counts_mae"].items()))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
