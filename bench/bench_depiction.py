"""Render and extract times per molecule (one core), on a fixed sample of RDKit's first_5K.smi.

Usage: python bench/bench_depiction.py [--every 10]
Goal (core-library issue): each under 10 ms per molecule.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from rdkit import RDConfig

from raypipe import Molecule, MoleculeError, extract_graph, render_depiction

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--every", type=int, default=10, help="take every Nth SMILES")
    args = parser.parse_args()
    smi = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
    molecules = []
    for line in smi.read_text().splitlines()[:: args.every]:
        try:
            m = Molecule.from_smiles(line.split()[0])
        except (MoleculeError, IndexError):
            continue
        if m.corrugation <= 1.8:
            molecules.append(m)
    render_ms, extract_ms = [], []
    for m in molecules:
        t0 = time.perf_counter()
        image = render_depiction(m)
        t1 = time.perf_counter()
        extract_graph(image)
        t2 = time.perf_counter()
        render_ms.append((t1 - t0) * 1e3)
        extract_ms.append((t2 - t1) * 1e3)
    for name, values in (("render", render_ms), ("extract", extract_ms)):
        v = np.array(values)
        print(f"{name:8s} n={len(v)} mean={v.mean():.2f} ms median={np.median(v):.2f} ms p95={np.percentile(v, 95):.2f} ms")


if __name__ == "__main__":
    main()
