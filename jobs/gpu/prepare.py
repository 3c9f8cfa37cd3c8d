"""Prepare a lent GPU machine's training run here (where RDKit is): conformers as data, wheels to carry.

    python jobs/gpu/prepare.py [--limit N] [--out .gpu]

Writes into ``--out`` (ignored by git; the device tool carries it):
- ``molecules.jsonl.gz``: one prepared molecule per line (``raypipe.Molecule.to_record``: elements,
  positions, MMFF charges, bonds, SMILES; plus ``id`` and ``split``), the catalogue's train and val
  molecules that pass the simulation's filters, in catalogue order. The test split stays here.
- ``whl/``: the wheels the device lacks for ppafm on OpenCL (ppafm, pyopencl, pytools, pydantic, toml...),
  for Python 3.12 on x86-64.
Then follow the README's "Training on a lent GPU" (``jobs/gpu/run.py`` there).
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

WHEELS = ["ppafm==0.4.1", "pyopencl==2026.1.4", "pytools==2026.1.1", "platformdirs==4.5.0", "siphash24==1.8",
          "pydantic==2.12.5", "pydantic-core==2.41.5", "annotated-types==0.7.0", "typing-inspection==0.4.2",
          "toml==0.10.2"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu")
    parser.add_argument("--limit", type=int, default=None, help="only the first N catalogue molecules")
    parser.add_argument("--no-wheels", action="store_true")
    args = parser.parse_args()

    from raypipe.chem.catalog import CATALOG
    from raypipe.chem.sources import read_molecule_list
    from raypipe.errors import MoleculeError
    from raypipe.simulation.shards import prepare_molecule, split_of
    from raypipe.window import DEFAULT_WINDOW

    args.out.mkdir(parents=True, exist_ok=True)
    kept = rejected = 0
    with gzip.open(args.out / "molecules.jsonl.gz", "wt") as f:
        for molecule_id, smiles in read_molecule_list(str(CATALOG))[: args.limit]:
            try:
                molecule = prepare_molecule(molecule_id, smiles, 0, DEFAULT_WINDOW)
            except MoleculeError:
                rejected += 1
                continue
            split = split_of(molecule.smiles)
            if split == "test":
                continue
            f.write(json.dumps({"id": molecule_id, "split": split, **molecule.to_record()}) + "\n")
            kept += 1
    print(f"prepared {kept} molecules (train + val; {rejected} rejected) -> {args.out / 'molecules.jsonl.gz'}")
    if not args.no_wheels:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
                   "3.12", "--implementation", "cp", "-d", str(args.out / "whl"), *WHEELS]
        for platform in PLATFORMS:
            command[5:5] = ["--platform", platform]
        subprocess.run(command, check=True)
        print(f"wheels in {args.out / 'whl'}")


if __name__ == "__main__":
    main()
