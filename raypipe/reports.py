"""Depictions and extracted graphs of molecules written to a folder a person opens.

The folder appears whole or not at all: it is built under a temporary name beside the target and
renamed into place. It replaces only a folder raypipe wrote (marked by a ``.raypipe-depictions`` file) or
an empty one; a folder holding anything else is refused, never deleted.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from raypipe.chem.depiction import encode_png, render_depiction
from raypipe.chem.elements import COLORS
from raypipe.chem.graph import extract_graph
from raypipe.chem.molecule import Molecule
from raypipe.chem.scoring import score
from raypipe.errors import MoleculeError
from raypipe.window import DEFAULT_WINDOW, Window


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


def grey_rgb(image: np.ndarray) -> np.ndarray:
    """A 2D array scaled to its own range as a grey (H, W, 3) uint8 image."""
    image = image.astype(np.float32)
    scaled = (image - image.min()) / max(float(np.ptp(image)), 1e-9) * 255
    return np.repeat(scaled.astype(np.uint8)[..., None], 3, axis=2)


def draw_graph(atoms: list[dict], bonds: list[dict], window: Window | None = None, scale: int = 2) -> np.ndarray:
    """The extracted graph drawn as a diagram: bonds as lines, atoms as labelled discs in element colours."""
    window = window or DEFAULT_WINDOW
    size = window.size * scale
    image = Image.new("RGB", (size, size), "black")
    draw = ImageDraw.Draw(image)
    xy = window.to_pixels(np.array([[a["x"], a["y"]] for a in atoms]).reshape(-1, 2)) * scale
    for b in bonds:
        (x0, y0), (x1, y1) = xy[b["i"]], xy[b["j"]]
        draw.line([(x0, y0), (x1, y1)], fill=(200, 200, 200), width=2)
    for a, (x, y) in zip(atoms, xy):
        r = 5 if a["element"] == "H" else 8
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in COLORS[a["element"]]))
        if a["element"] not in ("H", "C"):
            draw.text((x - 4, y - 6), a["element"], fill="black")
    return np.asarray(image)


def label_gallery(rows: list[dict], path: str | Path, title: str = "raypipe labels") -> Path:
    """An HTML page (images inline) with, per scan: input slices, predicted depiction, extracted graph,
    formula, SMILES and confidence, the truth when known, or the error. Written atomically."""
    cards = []
    for row in rows:
        head = f"<b>{html.escape(row['scan_id'] or '')}</b><br><small>{html.escape(row['source'])}</small>"
        if row["status"] != "ok":
            cards.append(f"<div class='card error'>{head}<p>error: {html.escape(row['error'] or '')}</p></div>")
            continue
        graph = encode_png(draw_graph(row["atoms"], row["bonds"]))
        truth = (f"<br>truth: {html.escape(row['truth_formula'])} {html.escape(row['truth_smiles'] or '')} "
                 f"{'&#10003;' if row['truth_formula'] == row['formula'] else '&#10007;'}"
                 if row.get("truth_formula") else "")
        cards.append(
            f"<div class='card'>{head}<br>{_img(row['input_preview'], 'closest | farthest slice')}"
            f"{_img(row['depiction'], 'predicted depiction', 256)}{_img(graph, 'extracted graph', 256)}"
            f"<p>{html.escape(row['formula'] or '')} &nbsp; {html.escape(row['smiles'] or '(no valid SMILES)')}"
            f" &nbsp; confidence {row['confidence']:.2f}{truth}<br><small>model {html.escape(row['model'])}"
            f"</small></p></div>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;background:#f4f4f4} .card{background:white;margin:8px;padding:8px;"
            "display:inline-block;vertical-align:top;max-width:800px} .error{background:#fdd} img{margin:2px;"
            "image-rendering:pixelated}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{len(rows)} scans, "
            f"{sum(r['status'] == 'ok' for r in rows)} ok</p>{''.join(cards)}</body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page)
    tmp.replace(path)
    return path


def _img(png: bytes, alt: str, width: int | None = None) -> str:
    size = f" width='{width}'" if width else ""
    return f"<img src='data:image/png;base64,{base64.b64encode(png).decode()}' alt='{alt}' title='{alt}'{size}>"
