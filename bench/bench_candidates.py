"""Candidate ranking: is the truth the top candidate among decoys of similar size and composition?

    python bench/bench_candidates.py --data out/sim/catalog-r4 --scans 8 --candidates 100
    python bench/bench_candidates.py --experimental ../shared/experimental --candidates 50

Simulated: ``--scans`` test-split stacks (molecules never trained on), each against the truth plus
``--candidates - 1`` decoys from the training catalogue nearest in heavy-atom count with the same set of
heteroatom elements where possible; top-1 / top-5 accuracy for the depiction score, the simulation score
and their combination, as given, with the input mis-scaled 0.8x and 1.25x (a wrong field of view) and
rotated by a random angle. Experimental: the real stacks of ``--experimental`` (truth from the shared
README's table), each against 50 decoys from RDKit's NCI ``first_5K.smi`` of similar size; the rank of
the truth for each score. Reports time per candidate and per scan, and the cache at work (simulations
run vs candidates scored).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EXPERIMENTAL_TRUTH = {"PTCDA": "O=C1OC(=O)c2ccc3c4ccc5C(=O)OC(=O)c6ccc(c7ccc1c2c37)c4c56",
                      "1-bromo-3,5-dichlorobenzene": "Brc1cc(Cl)cc(Cl)c1",
                      "bromo-iodo-terphenyl-Cu111": "Brc1cccc(-c2cccc(-c3cccc(I)c3)c2)c1"}


def signature(smiles: str) -> tuple[int, frozenset]:
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    return mol.GetNumHeavyAtoms(), frozenset(a.GetSymbol() for a in mol.GetAtoms()) - {"C"}


def decoys(truth: str, pool: list[str], n: int) -> list[str]:
    heavy, hetero = signature(truth)
    scored = []
    for smiles in pool:
        if smiles == truth:
            continue
        h, e = signature(smiles)
        scored.append((abs(h - heavy) + 3 * len(e ^ hetero), smiles))
    return [s for _, s in sorted(scored)[:n]]


def transformed(stack, condition: str, rng):
    from scipy import ndimage

    from raypipe.scans.stack import ScanStack

    metadata = dict(stack.metadata)
    images = stack.images
    if condition.startswith("scale"):  # the scan is told a wrong field of view
        metadata["fov"] = [v * float(condition[5:]) for v in metadata["fov"]]
    elif condition == "rotated":
        images = ndimage.rotate(images, rng.uniform(0, 360), axes=(2, 1), reshape=False, order=1, mode="nearest")
    return ScanStack(images.astype(np.float32), stack.heights, metadata, scan_id=stack.scan_id)


def summarise(ranks: list[dict]) -> dict:
    out = {}
    for key in ("depiction", "simulation", "combined"):
        values = [r[key] for r in ranks]
        out[key] = {"top1": float(np.mean([v == 1 for v in values])), "top5": float(np.mean([v <= 5 for v in values])),
                    "median_rank": float(np.median(values))}
    return out


def rank_of(truth: str, rows: list[dict], key: str) -> int:
    order = sorted(rows, key=lambda r: -r[key])
    return next(k for k, r in enumerate(order, start=1) if r["smiles"] == truth)


def score_all(x, candidates, model, cache) -> tuple[list[dict], float]:
    from raypipe.identify.candidates import depiction_score, simulation_score

    predicted = model.predict(x[None])[0]
    start = time.perf_counter()
    rows = []
    for smiles in candidates:
        candidate = cache.get(smiles)
        if candidate is None:
            continue
        dep = depiction_score(predicted, candidate)
        sim = simulation_score(x, candidate, cache)
        rows.append({"smiles": candidate.smiles, "depiction": dep, "simulation": sim, "combined": 0.5 * (dep + sim)})
    return rows, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="out/sim/catalog-r4")
    parser.add_argument("--scans", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--model", default=None)
    parser.add_argument("--experimental", type=Path, default=None)
    parser.add_argument("--cache", default="out/candidate-cache")
    parser.add_argument("--out", type=Path, default=Path("out/bench-candidates.json"))
    args = parser.parse_args()
    from rdkit import Chem

    from raypipe.identify.candidates import CandidateCache
    from raypipe.chem.catalog import CATALOG
    from raypipe.chem.sources import read_molecule_list
    from raypipe.model.inference import load_model
    from raypipe.scans.preprocess import preprocess
    from raypipe.simulation.export import read_shard_rows, row_to_stack

    model = load_model(args.model)
    cache = CandidateCache(model.config.window, args.cache)
    results: dict = {"model": model.tag, "candidates": args.candidates}
    rng = np.random.default_rng(0)
    if args.experimental is None:
        pool = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for _, s in read_molecule_list(str(CATALOG))[:1500]]
        seen, scans = set(), []
        for row in read_shard_rows(args.data, split="test"):
            if row["smiles"] not in seen and abs(row["amplitude"] - 1.0) < 0.45:
                seen.add(row["smiles"])
                scans.append(row_to_stack(row))
            if len(scans) >= args.scans:
                break
        by_condition: dict[str, list] = {}
        times = []
        for stack in scans:
            truth = stack.metadata["truth"]["smiles"]
            candidates = [truth] + decoys(truth, pool, args.candidates - 1)
            for condition in ("as given", "scale0.8", "scale1.25", "rotated"):
                x = preprocess(transformed(stack, condition, rng), n_slices=model.config.n_slices,
                               window=model.config.window)
                before = cache.simulated
                rows, seconds = score_all(x, candidates, model, cache)
                times.append((seconds, len(rows), cache.simulated - before))
                by_condition.setdefault(condition, []).append(
                    {k: rank_of(truth, rows, k) for k in ("depiction", "simulation", "combined")})
                print(f"{stack.scan_id} {condition}: {by_condition[condition][-1]} ({seconds:.1f} s)", flush=True)
            results["simulated"] = {c: summarise(r) for c, r in by_condition.items()}  # kept after each scan:
            results["scans"] = len(by_condition["as given"])  # a long run stopped early still reports
            _finish(results, times, cache, args.out)
    else:
        nci = [s for s, _ in [(line.split()[0], 0) for line in
                              (Path(Chem.RDConfig.RDDataDir) / "NCI" / "first_5K.smi").read_text().splitlines()
                              if line.strip()] if Chem.MolFromSmiles(s) is not None]
        from raypipe.scans.formats import load_stack

        times, per_stack = [], {}
        for folder, smiles in EXPERIMENTAL_TRUTH.items():
            truth = Chem.MolToSmiles(Chem.MolFromSmiles(smiles))
            candidates = [truth] + decoys(truth, nci, args.candidates)
            x = preprocess(load_stack(args.experimental / folder), n_slices=model.config.n_slices,
                           window=model.config.window)
            before = cache.simulated
            rows, seconds = score_all(x, candidates, model, cache)
            times.append((seconds, len(rows), cache.simulated - before))
            per_stack[folder] = {k: rank_of(truth, rows, k) for k in ("depiction", "simulation", "combined")}
            print(folder, per_stack[folder], f"of {len(rows)}", flush=True)
        results["experimental"] = per_stack
    _finish(results, times, cache, args.out)
    print(json.dumps(results, indent=2))


def _finish(results: dict, times: list, cache, out: Path) -> None:
    total = sum(t for t, _, _ in times)
    scored = sum(n for _, n, _ in times)
    warm = [(t, n) for t, n, new in times if new == 0]  # every candidate already prepared and simulated
    results.update({"seconds_per_scan": total / len(times), "seconds_per_candidate": total / max(scored, 1),
                    "warm_scans": len(warm),
                    "warm_seconds_per_scan": sum(t for t, _ in warm) / len(warm) if warm else None,
                    "warm_seconds_per_candidate": sum(t for t, _ in warm) / max(sum(n for _, n in warm), 1)
                    if warm else None,
                    "candidates_scored": scored, "simulations_run": cache.simulated,
                    "candidates_prepared": len(cache.items)})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
