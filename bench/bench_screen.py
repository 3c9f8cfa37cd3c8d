"""The depiction screen of identification (:func:`raypipe.identify.search.screen`) on validation stacks: how
deep into the filter's ranking it should look, and what each molecule it looks at costs.

    python bench/bench_screen.py --readings out/tune-filter-readings.pkl --library out/library/catalog

Reads the model's readings of validation stacks that ``bench/tune_filter.py`` keeps (``--readings``: never
the test split of ``bench_identify.py``), ranks the library for each with the shipped filter, and for the
stacks whose truth the filter puts below the always-kept ``SCREEN_RESERVE`` but within ``--depth``
(``--n-deep`` of them beyond rank 100, ``--n-mid`` within it) scores the depiction of every one of the
filter's best ``--depth`` against the predicted depiction. Reports, for each screen depth, how many truths
the shortlist (``SHORTLIST``: the reserve, then the best depictions) holds, and the seconds a screened
molecule costs (drawing it where the library's cache has no depiction yet, and scoring it). ``--compare
N``: the depiction match's coarse pose search (the product's) against the search of every pose at full
resolution (``search=0``), same candidates and readings, in this run: milliseconds a candidate and how far
the scores differ.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

DEPTHS = (100, 150, 200, 250, 300, 400, 500)


def shortlisted(depictions: np.ndarray, is_truth: np.ndarray, depth: int, keep: int, reserve: int) -> bool:
    """Whether a screen of ``depth`` keeps the truth: the filter's best ``reserve``, then the best depictions
    (ties: the filter's order), as :func:`raypipe.identify.search.screen` chooses."""
    rest = sorted(range(reserve, min(depth, len(depictions))), key=lambda i: (-depictions[i], i))
    return bool(is_truth[:reserve].any() or is_truth[rest[: keep - reserve]].any())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=Path, default=Path("out/tune-filter-readings.pkl"))
    parser.add_argument("--library", default="out/library/catalog")
    parser.add_argument("--depth", type=int, default=300, help="how deep the scores are computed")
    parser.add_argument("--n-deep", type=int, default=50, help="stacks whose truth the filter ranks 101-DEPTH")
    parser.add_argument("--n-mid", type=int, default=20, help="stacks whose truth it ranks 6-100")
    parser.add_argument("--compare", type=int, default=100, help="candidates timed both ways (0: none)")
    parser.add_argument("--out", type=Path, default=Path("out/bench-screen.json"))
    args = parser.parse_args()

    from raypipe.identify.candidates import CandidateCache, depiction_score
    from raypipe.identify.defaults import SCREEN_RESERVE, SHORTLIST
    from raypipe.identify.library import Library
    from raypipe.identify.search import filter_scores
    from tune_filter import query_of

    library = Library.open(args.library)
    items = pickle.loads(args.readings.read_bytes())["items"]
    index = {s: i for i, s in enumerate(library.smiles)}
    logits = [filter_scores(library, query_of(library, it))["logit"] for it in items]
    ranks = np.array([int((s > s[index[it["truth"]]]).sum()) + 1 for s, it in zip(logits, items)])
    bands = {"1-20": int((ranks <= 20).sum()), "21-100": int(((ranks > 20) & (ranks <= 100)).sum()),
             f"101-{args.depth}": int(((ranks > 100) & (ranks <= args.depth)).sum()),
             f">{args.depth}": int((ranks > args.depth).sum())}
    print(f"{len(items)} validation readings; the filter's rank of the truth: {bands}", flush=True)
    rng = np.random.default_rng(0)
    mid = rng.permutation(np.flatnonzero((ranks > SCREEN_RESERVE) & (ranks <= 100)))[: args.n_mid]
    deep = rng.permutation(np.flatnonzero((ranks > 100) & (ranks <= args.depth)))[: args.n_deep]
    cache = CandidateCache(library.window, library.cache_uri, conformers=1)
    rows, seconds, scored = [], 0.0, 0
    for j in [*mid, *deep]:
        top = np.argsort(-logits[j], kind="stable")[: args.depth]
        start = time.perf_counter()
        depictions = []
        for i in top:
            candidate = cache.get(str(library.smiles[i]))
            depictions.append(-1.0 if candidate is None else depiction_score(items[j]["depiction"], candidate))
        seconds += time.perf_counter() - start
        scored += len(top)
        rows.append({"truth": items[j]["truth"], "stage1": int(ranks[j]), "depictions": depictions,
                     "is_truth": [bool(library.smiles[i] == items[j]["truth"]) for i in top]})
        print(f"{len(rows)}/{len(mid) + len(deep)}: filter rank {ranks[j]}", flush=True)
    table = {}
    for depth in [d for d in DEPTHS if d <= args.depth]:
        kept = [shortlisted(np.array(r["depictions"]), np.array(r["is_truth"]), depth, SHORTLIST, SCREEN_RESERVE)
                for r in rows]
        table[depth] = {"ranks 6-100": f"{sum(k for k, r in zip(kept, rows) if r['stage1'] <= 100)}/{len(mid)}",
                        f"ranks 101-{args.depth}": f"{sum(k for k, r in zip(kept, rows) if r['stage1'] > 100)}"
                                                   f"/{len(deep)}"}
        print(f"screen {depth}: shortlisted {table[depth]}")
    compare = {}
    if args.compare and rows:
        candidates = [c for c in (cache.get(s) for s in library.smiles[: args.compare]) if c is not None]
        timings, differences = {"coarse": 0.0, "full": 0.0}, []
        for j in [*mid, *deep][:3]:
            scores = {}
            for name, search in (("coarse", 6), ("full", 0)):
                start = time.perf_counter()
                scores[name] = np.array([depiction_score(items[j]["depiction"], c, search=search) for c in candidates])
                timings[name] += time.perf_counter() - start
            differences.append(np.abs(scores["coarse"] - scores["full"]))
        n = len(candidates) * min(3, len(rows))
        differences = np.concatenate(differences)
        compare = {"candidates": n, "ms_coarse": 1000 * timings["coarse"] / n, "ms_full": 1000 * timings["full"] / n,
                   "speedup": timings["full"] / max(timings["coarse"], 1e-9),
                   "max_difference": float(differences.max()), "mean_difference": float(differences.mean())}
        print(f"depiction match, {n} candidates: {compare['ms_coarse']:.1f} ms coarse search vs "
              f"{compare['ms_full']:.1f} ms full ({compare['speedup']:.2f}x); scores differ by at most "
              f"{compare['max_difference']:.4f} (mean {compare['mean_difference']:.4f})")
    result = {"library": args.library, "molecules": len(library), "readings": len(items), "filter_ranks": bands,
              "shortlist": SHORTLIST, "reserve": SCREEN_RESERVE, "screen": table,
              "seconds_per_molecule": seconds / max(scored, 1), "compare": compare, "rows": rows}
    print(f"{result['seconds_per_molecule'] * 1000:.0f} ms a screened molecule (drawn where not cached, scored)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
