"""Identification against a library: is the truth found among thousands of molecules?

    python bench/bench_identify.py --data out/sim/bench-heldout --library out/library/catalog --n 30
    python bench/bench_identify.py ... --experimental ../shared/experimental

Simulated: the first ``--n`` molecules of ``--data`` (a data set of test-split catalogue molecules nobody
trained on, e.g. ``bench/heldout.py --simulate-only``), one stack each, hidden in ``--library`` (the whole
training catalogue, built by ``raypipe library build`` when absent). For each: the rank of the truth after
the filter (over the whole library), whether the shortlist holds it (after the depiction screen of the
filter's best ``--screen``; ``shortlisted``), and its rank after stage 2 (the shortlist's simulation and
depiction match); top-1, top-5, top-20; seconds per scan cold (no depiction or simulation of a library
molecule cached yet: the cache is emptied first) and warm (the same scans again). Experimental: the real stacks of ``--experimental`` with
their true molecules added to the same library (in memory), the rank of the truth; their field of view is
unknown. Writes ``--out`` (JSON) and prints it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CATALOG = Path(__file__).resolve().parents[1] / "raypipe" / "chem" / "data" / "training_molecules.csv.gz"
EXPERIMENTAL_TRUTH = {"PTCDA": "O=C1OC(=O)c2ccc3c4ccc5C(=O)OC(=O)c6ccc(c7ccc1c2c37)c4c56",
                      "1-bromo-3,5-dichlorobenzene": "Brc1cc(Cl)cc(Cl)c1",
                      # the shared README gives only C18H12BrI: an all-meta isomer is assumed
                      "bromo-iodo-terphenyl-Cu111": "Brc1cccc(-c2cccc(-c3cccc(I)c3)c2)c1"}


def one(stack, library, model, cache, shortlist: int, truth: str, screen: int = 0) -> dict:
    from raypipe.identify.search import _identify

    start = time.perf_counter()
    before = cache.simulated
    result = _identify(stack, library, model=model, top=shortlist, shortlist_size=shortlist, screen_size=screen,
                       cache=cache)
    seconds = time.perf_counter() - start
    index = {s: i for i, s in enumerate(library.smiles)}
    from raypipe.identify.search import Query, filter_scores
    from raypipe.model.reading import read_one

    # the truth's rank after stage 1, over the whole library
    prediction = model.infer(result.input[None])
    reading = read_one(prediction.depictions[0], model.config.window, centres=prediction.centre_map(0),
                       margins=prediction.margin_stats(0), calibration=model.calibration,
                       counts=prediction.count_of(0))
    query = Query.of(reading.graph, reading.confidence, result.input, model.config.window,
                     scale_known=bool(stack.metadata.get("fov")))
    score = filter_scores(library, query)["logit"]
    t = index.get(truth)
    stage1 = int((score > score[t]).sum()) + 1 if t is not None else None
    stage2 = next((m["rank"] for m in result.matches if m["smiles"] == truth), None)
    listed = result.shortlist.index(truth) + 1 if truth in result.shortlist else None  # after the screen
    return {"truth": truth, "read": result.formula, "confidence": result.confidence, "stage1_rank": stage1,
            "shortlisted": listed,
            "rank": stage2, "seconds": seconds, "simulated": cache.simulated - before,
            "best": result.matches[0]["smiles"] if result.matches else None,
            "matches": [{**m, "truth": m["smiles"] == truth} for m in result.matches]}


def summary(rows: list[dict], shortlist: int) -> dict:
    stage1 = np.array([r["stage1_rank"] or 10**9 for r in rows])
    final = np.array([r["rank"] or 10**9 for r in rows])
    return {"n": len(rows), "stage1_top20": float((stage1 <= 20).mean()), f"stage1_top{shortlist}":
            float((stage1 <= shortlist).mean()), "stage1_median_rank": float(np.median(stage1)),
            "shortlisted": float(np.mean([r.get("shortlisted") is not None for r in rows])),
            "top1": float((final == 1).mean()), "top5": float((final <= 5).mean()),
            "top20": float((final <= 20).mean()), "seconds_per_scan": float(np.mean([r["seconds"] for r in rows]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="out/sim/bench-heldout", help="simulated stacks of unseen molecules")
    parser.add_argument("--library", default="out/library/catalog", help="built from the catalogue when absent")
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--shortlist", type=int, default=20)
    parser.add_argument("--screen", type=int, default=None,
                        help="the filter's best screened by depiction down to --shortlist (default: the "
                             "product's, raypipe.identify.defaults.SCREEN; --shortlist or less: no screen)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--experimental", type=Path, default=None)
    parser.add_argument("--no-warm", action="store_true", help="skip the second (warm) pass")
    parser.add_argument("--out", type=Path, default=Path("out/bench-identify.json"))
    args = parser.parse_args()

    from raypipe.identify.candidates import CandidateCache
    from raypipe.identify.library import Library
    from raypipe.model.inference import load_model
    from raypipe.storage import filesystem

    model = load_model(args.model, device="cpu")
    fs, base = filesystem(args.library)
    if not fs.exists(base + "/library.json"):
        from raypipe.pipelines.library import build_library

        start = time.perf_counter()
        summary_ = build_library(str(CATALOG), args.library)
        print(f"built {args.library}: {summary_.rows} molecules in {time.perf_counter() - start:.0f} s")
    library = Library.open(args.library, window=model.config.window)
    from raypipe.identify.defaults import SCREEN

    args.screen = SCREEN if args.screen is None else args.screen
    results: dict = {"model": model.tag, "library": args.library, "molecules": len(library),
                     "shortlist": args.shortlist, "screen": args.screen}
    cache_dir = Path(args.library) / "cache"
    if args.experimental is None:
        from raypipe.simulation.export import read_shard_rows, row_to_stack

        seen, stacks = set(), []
        for row in read_shard_rows(args.data):
            if row["smiles"] not in seen:
                seen.add(row["smiles"])
                stacks.append((row_to_stack(row), row["smiles"]))
            if len(stacks) >= args.n:
                break
        shutil.rmtree(cache_dir, ignore_errors=True)  # cold: no simulation of any library molecule yet
        from raypipe.identify.search import LIBRARY_CONFORMERS

        passes = [("cold", CandidateCache(model.config.window, cache_dir, conformers=LIBRARY_CONFORMERS))]
        if not args.no_warm:
            passes.append(("warm", None))
        for name, cache in passes:
            cache = cache or CandidateCache(model.config.window, cache_dir, conformers=LIBRARY_CONFORMERS)  # files only
            rows = []
            for stack, truth in stacks:
                rows.append(one(stack, library, model, cache, args.shortlist, truth, args.screen))
                print(name, json.dumps({k: v for k, v in rows[-1].items() if k not in ("best", "matches")}), flush=True)
            results[name] = {**summary(rows, args.shortlist), "scans": rows}
    else:
        from rdkit import Chem

        from raypipe.scans.formats import load_stack

        extra = Library.from_smiles(list(EXPERIMENTAL_TRUTH.values()), list(EXPERIMENTAL_TRUTH), model.config.window)
        merged = Library(library.uri, library.window, *(np.concatenate([getattr(library, f), getattr(extra, f)])
                                                         for f in ("ids", "names", "smiles", "formulas", "counts",
                                                                   "rings", "extent", "spread", "fingerprints",
                                                                   "distances")))
        from raypipe.identify.search import LIBRARY_CONFORMERS

        cache = CandidateCache(model.config.window, cache_dir, conformers=LIBRARY_CONFORMERS)
        rows = []
        for folder, smiles in EXPERIMENTAL_TRUTH.items():
            truth = Chem.MolToSmiles(Chem.MolFromSmiles(smiles))
            rows.append({"stack": folder, **one(load_stack(args.experimental / folder), merged, model, cache,
                                                args.shortlist, truth, args.screen)})
            print(json.dumps(rows[-1]), flush=True)
        results["experimental"] = {"truth_in_top5": sum(1 for r in rows if r["rank"] and r["rank"] <= 5),
                                   "scans": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps({k: v for k, v in results.items() if k not in ("cold", "warm")}, indent=2, default=str))
    for name in ("cold", "warm"):
        if name in results:
            print(name, json.dumps({k: v for k, v in results[name].items() if k != "scans"}))


if __name__ == "__main__":
    main()
