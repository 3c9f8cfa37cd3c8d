"""Depictions and extracted graphs of molecules written to a folder a person opens.

The folder appears whole or not at all: it is built under a temporary name beside the target and
renamed into place, replacing an earlier run's.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from raypipe.chem.depiction import encode_png, render_depiction
from raypipe.chem.graph import extract_graph
from raypipe.chem.molecule import Molecule
from raypipe.chem.scoring import score
from raypipe.errors import MoleculeError


def write_depictions(molecules: list[tuple[str, str]], out_dir: str | Path) -> dict:
    """Depict, extract and score each (smiles, name); write PNGs, graphs.jsonl and sheet.png."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    rows, tiles = [], []
    try:
        for smiles, name in molecules:
            row: dict = {"name": name, "input_smiles": smiles}
            try:
                molecule = Molecule.from_smiles(smiles, name=name)
            except MoleculeError as exc:
                rows.append({**row, "status": "error", "error": str(exc)})
                continue
            image = render_depiction(molecule)
            graph = extract_graph(image)
            (tmp / f"{name}.png").write_bytes(encode_png(image))
            atoms, bonds = graph.to_rows()
            rows.append({**row, "status": "ok", "formula": molecule.formula, "corrugation": molecule.corrugation,
                         "extracted_formula": graph.formula, "extracted_smiles": graph.smiles,
                         "confidence": graph.confidence, **score(graph, molecule).as_dict(),
                         "atoms": atoms, "bonds": bonds})
            tiles.append((name, graph.formula, image))
        with open(tmp / "graphs.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        if tiles:
            contact_sheet(tiles).save(tmp / "sheet.png")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ok = [r for r in rows if r["status"] == "ok"]
    return {"molecules": len(rows), "ok": len(ok), "errors": len(rows) - len(ok),
            "total_exact": sum(r["total"] for r in ok), "out": str(out_dir)}


def contact_sheet(tiles: list[tuple[str, str, np.ndarray]], scale: int = 2, columns: int = 4) -> Image.Image:
    """A grid of depictions, each captioned with its name and extracted formula."""
    size = tiles[0][2].shape[0] * scale
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * size, rows * (size + 24)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (name, formula, image) in enumerate(tiles):
        x, y = (k % columns) * size, (k // columns) * (size + 24)
        sheet.paste(Image.fromarray(image).resize((size, size), Image.NEAREST), (x, y))
        draw.text((x + 4, y + size + 2), f"{name[:22]}  {formula}", fill="black")
    return sheet
