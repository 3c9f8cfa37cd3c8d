"""render -> extract -> score accuracy on RDKit's first_5K.smi (or any list), clean and under blur and noise.

Usage: python bench/roundtrip.py [--molecules LIST] [--every 1] [--conditions clean,blur0.7,...]
The set: molecules that pass the element and fragment filter and are quasi-planar (corrugation <= 1.8 Å).
Molecules wider than the 18 Å window are kept: their cut-off parts count as errors.
Blur is a Gaussian of sigma pixels on each colour channel; noise is Gaussian with that std (0-255 scale).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from raypipe import Molecule, MoleculeError, aggregate, extract_graph, render_depiction, score
from raypipe.chem.sources import read_molecule_list


def degrade(image: np.ndarray, condition: str, rng: np.random.Generator) -> np.ndarray:
    out = image.astype(np.float32)
    for part in condition.split("+"):
        if part.startswith("blur"):
            out = ndimage.gaussian_filter(out, sigma=(float(part[4:]), float(part[4:]), 0))
        elif part.startswith("noise"):
            out = out + rng.normal(0, float(part[5:]), out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--molecules", help="a .smi or .csv molecule list (default: RDKit's NCI first_5K.smi)")
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--conditions", default="clean,blur0.7,blur1.0,noise20,noise40,blur1.0+noise20")
    parser.add_argument("--failures", type=Path,
                        help="write the SMILES (as written in the list) that fail the clean round trip here")
    args = parser.parse_args()
    smiles = [s for _, s in read_molecule_list(args.molecules)][:: args.every]
    molecules, sources, rejected = [], [], 0
    for s in smiles:
        try:
            m = Molecule.from_smiles(s)
        except MoleculeError:
            rejected += 1
            continue
        if m.corrugation <= 1.8:
            molecules.append(m)
            sources.append(s)  # the embedding depends on the SMILES as written, so keep it
    print(f"{len(smiles)} SMILES, {rejected} rejected by the filters, {len(molecules)} quasi-planar")
    corrugations = [m.corrugation for m in molecules]
    print("| condition | n | total | structure | composition | precision | recall | mean confidence |")
    print("|---|---|---|---|---|---|---|---|")
    for condition in args.conditions.split(","):
        rng = np.random.default_rng(0)
        scores, confidence, failures = [], [], []
        for m, source in zip(molecules, sources):
            image = render_depiction(m)
            graph = extract_graph(image if condition == "clean" else degrade(image, condition, rng))
            scores.append(score(graph, m))
            confidence.append(graph.confidence)
            if not scores[-1].total:
                failures.append(source)
        a = aggregate(scores, corrugations)
        print(f"| {condition} | {a['n']} | {a['total']:.4f} | {a['structure']:.4f} | {a['composition']:.4f} | "
              f"{a['precision']:.4f} | {a['recall']:.4f} | {np.mean(confidence):.3f} |", flush=True)
        if condition == "clean":
            print(json.dumps({k: round(v["total"], 4) for k, v in a["by_corrugation"].items()}))
            if args.failures:
                args.failures.write_text("\n".join(failures) + "\n")


if __name__ == "__main__":
    main()
