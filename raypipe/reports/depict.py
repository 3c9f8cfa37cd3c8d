"""``raypipe depict``: depictions and extracted graphs of molecules written to a folder a person opens.

The folder appears whole or not at all: it is built under a temporary name beside the target and
renamed into place. It replaces only a folder raypipe wrote (marked by a ``.raypipe-depictions`` file) or
an empty one; a folder holding anything else is refused, never deleted.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from raypipe.chem.depiction import encode_png, render_depiction
from raypipe.chem.graph import extract_graph
from raypipe.chem.molecule import Molecule
from raypipe.chem.scoring import score
from raypipe.errors import MoleculeError
from raypipe.images import contact_sheet

MARKER = ".raypipe-depictions"


def _check_replaceable(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a folder; choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise FileExistsError(f"{out_dir}: a folder raypipe did not write (no {MARKER}) and not empty; "
                              "choose another --out, nothing was changed")


def write_depictions(molecules: list[tuple[str, str]], out_dir: str | Path) -> dict:
    """Depict, extract and score each (smiles, name); write PNGs, graphs.jsonl and sheet.png into
    ``out_dir`` (see the module docs: a folder raypipe did not write is refused with FileExistsError)."""
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
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
        (tmp / MARKER).write_text("written by raypipe depict; this folder is replaced by the next run\n")
        _check_replaceable(out_dir)  # again, just before: nothing of a user's may have appeared meanwhile
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{tmp.name[-8:]}")
            out_dir.rename(old)  # the swap: old aside, new in place, then the old removed
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ok = [r for r in rows if r["status"] == "ok"]
    return {"molecules": len(rows), "ok": len(ok), "errors": len(rows) - len(ok),
            "total_exact": sum(r["total"] for r in ok), "out": str(out_dir)}
