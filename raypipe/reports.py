"""Depictions and extracted graphs of molecules written to a folder a person opens.

The folder appears whole or not at all: it is built under a temporary name beside the target and
renamed into place. It replaces only a folder raypipe wrote (marked by a ``.raypipe-depictions`` file) or
an empty one; a folder holding anything else is refused, never deleted.
"""

from __future__ import annotations

import base64
import html
import json
import re
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


def grey(image: np.ndarray) -> np.ndarray:
    """A 2D array scaled to its own range as a grey (H, W) uint8 image."""
    image = image.astype(np.float32)
    return ((image - image.min()) / max(float(np.ptp(image)), 1e-9) * 255).astype(np.uint8)


def grey_rgb(image: np.ndarray) -> np.ndarray:
    """A 2D array scaled to its own range as a grey (H, W, 3) uint8 image."""
    return np.repeat(grey(image)[..., None], 3, axis=2)


def draw_graph(atoms: list[dict], bonds: list[dict], window: Window | None = None, scale: int = 2) -> np.ndarray:
    """The read-back graph as a diagram: bonds as lines (double/triple drawn as such where perceived),
    atoms as discs in element colours, heteroatom labels placed where they overlap neither another
    label nor an atom."""
    window = window or DEFAULT_WINDOW
    size = window.size * scale
    image = Image.new("RGB", (size, size), "black")
    draw = ImageDraw.Draw(image)
    xy = window.to_pixels(np.array([[a["x"], a["y"]] for a in atoms]).reshape(-1, 2)) * scale
    for b in bonds:
        (x0, y0), (x1, y1) = xy[b["i"]], xy[b["j"]]
        order = b.get("order") or 1.0
        width = 2 if order < 1.4 else 4 if order < 2.5 else 6
        draw.line([(x0, y0), (x1, y1)], fill=(200, 200, 200), width=width)
    radius = [3 * scale // 2 if a["element"] == "H" else 4 * scale for a in atoms]
    for a, (x, y), r in zip(atoms, xy, radius):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in COLORS[a["element"]]))
    taken = [(x - r, y - r, x + r, y + r) for (x, y), r in zip(xy, radius)]
    for a, (x, y), r in zip(atoms, xy, radius):
        if a["element"] in ("H", "C"):
            continue
        w, h = 7 * len(a["element"]) + 2, 12
        for dx, dy in ((r + 1, -h / 2), (-r - w - 1, -h / 2), (-w / 2, -r - h - 1), (-w / 2, r + 1),
                       (r, -r - h), (r, r), (-r - w, -r - h), (-r - w, r)):
            box = (x + dx, y + dy, x + dx + w, y + dy + h)
            if not any(_overlap(box, other) for other in taken):
                break
        taken.append(box)
        draw.rectangle(box, fill=(0, 0, 0))
        draw.text((box[0] + 1, box[1] - 1), a["element"], fill=(255, 255, 255), font=_font(12))
    return np.asarray(image)


def _font(size: int):
    """DejaVu Sans (shipped with matplotlib, which raypipe installs: it has the Å), else Pillow's default."""
    from PIL import ImageFont

    try:
        import matplotlib

        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        return ImageFont.load_default()


def _overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def with_scale_bar(image: np.ndarray, pixel: float, scale: int = 2, length: float = 5.0) -> np.ndarray:
    """``image`` (H, W, 3) enlarged ``scale`` times (nearest) with a ``length`` Å bar and its label at the
    bottom left; ``pixel``: Å per pixel of the original image."""
    big = Image.fromarray(image).resize((image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST)
    draw = ImageDraw.Draw(big)
    bar = length / pixel * scale
    x0, y0 = 6, big.height - 10
    draw.rectangle([x0 - 2, y0 - 17, x0 + max(bar, 34) + 2, y0 + 5], fill=(0, 0, 0))
    draw.rectangle([x0, y0, x0 + bar, y0 + 3], fill=(255, 255, 255))
    draw.text((x0, y0 - 16), f"{length:g} Å", fill=(255, 255, 255), font=_font(13))
    return np.asarray(big)


def _png(image: np.ndarray) -> bytes:
    return encode_png(image)


def _fmt(value, unit: str = "", digits: int = 2) -> str:
    return "?" if value is None else f"{value:.{digits}f}{unit}"


def _card(row: dict, window: Window) -> str:
    from raypipe.chem.depiction import decode_png

    status, confidence = row["status"], row.get("confidence")
    known = bool(row.get("truth_formula"))
    right = known and row.get("formula") == row.get("truth_formula")
    attrs = (f"class='card{' error' if status != 'ok' else ''}' data-status='{status}' "
             f"data-confidence='{confidence if confidence is not None else -1:.4f}' "
             f"data-source='{html.escape(row.get('source') or '', quote=True)}' "
             f"data-truth='{'right' if right else 'wrong' if known else 'unknown'}'")
    head = (f"<h3>{html.escape(row.get('scan_id') or '(no id)')}</h3>"
            f"<div class='src'>{html.escape(row.get('source') or '')}</div>")
    if status != "ok":
        return f"<div {attrs}>{head}<p class='why'>error ({html.escape(row.get('error_kind') or '')}): " \
               f"{html.escape(row.get('error') or '')}</p></div>"
    fov = row.get("fov")
    heights = row.get("heights") or []
    params = (f"amplitude {_fmt(row.get('amplitude'), ' Å')} · stiffness {_fmt(row.get('stiffness'), ' N/m')} · "
              f"{row.get('n_images')} images" + (f", Δz {heights[-1] - heights[0]:.2f} Å" if len(heights) > 1 else "")
              + " · fov " + (f"{fov[0]:.1f} × {fov[1]:.1f} Å ({row.get('fov_source') or 'file'})" if fov
                             else "unknown (fitted to the window)"))
    figures = []
    if row.get("input_preview"):
        preview = decode_png(row["input_preview"])
        halves = [with_scale_bar(preview[:, k * window.size:(k + 1) * window.size], window.pixel) for k in (0, 1)]
        figures.append(_figure(_png(np.concatenate(halves, axis=1)), "closest | farthest slice (preprocessed)"))
    figures.append(_figure(_png(with_scale_bar(decode_png(row["depiction"]), window.pixel)), "predicted depiction"))
    graph = draw_graph(row.get("atoms") or [], row.get("bonds") or [], window)
    figures.append(_figure(_png(with_scale_bar(graph, window.pixel, scale=1)), "read-back graph"))
    if row.get("truth_depiction"):
        figures.append(_figure(_png(with_scale_bar(decode_png(row["truth_depiction"]), window.pixel)), "truth"))
    verdict = ("<span class='right'>&#10003; formula right</span>" if right else
               "<span class='wrong'>&#10007; formula wrong</span>" if known else "")
    truth = (f"<div>truth: <b>{html.escape(row['truth_formula'])}</b> {html.escape(row.get('truth_smiles') or '')} "
             f"{verdict}</div>" if known else "")
    quality = row.get("depiction_quality")
    ranked = row.get("candidates") or []
    if ranked:
        items = "".join(f"<li>{c['rank']}. {html.escape(c['smiles'])} — {c['score']:.2f} (depiction "
                        f"{c['depiction_score']:.2f}, simulation {c['simulation_score']:.2f})</li>" for c in ranked)
        truth += f"<div class='cands'>candidates:<ol style='margin:0'>{items}</ol></div>"
    return (f"<div {attrs}>{head}<div class='figs'>{''.join(figures)}</div>"
            f"<div class='res'><b>{html.escape(row.get('formula') or '')}</b> "
            f"{html.escape(row.get('smiles') or '(no valid SMILES)')}</div>"
            f"<div>confidence {_fmt(confidence)}" + (f" · drawing quality {_fmt(quality)}" if quality is not None else "")
            + f"</div>{truth}<div class='params'>{params}</div>"
            f"<div class='model'>model {html.escape(row.get('model') or '')}</div></div>")


def _figure(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode()
    return f"<figure><img src='data:image/png;base64,{data}' alt='{caption}'><figcaption>{caption}</figcaption></figure>"


def _legend() -> str:
    items = "".join(f"<span class='sw' style='background:rgb{COLORS[e]}'></span>{e} " for e in COLORS)
    return f"<div class='legend'>elements: {items}(raypipe's palette: F cyan, Br brown, unlike Jmol)</div>"


def _summary(rows: list[dict]) -> str:
    from collections import Counter

    ok = [r for r in rows if r["status"] == "ok"]
    known = [r for r in ok if r.get("truth_formula")]
    right = sum(r.get("formula") == r.get("truth_formula") for r in known)
    reasons = Counter((r.get("error") or "").rsplit(": ", 1)[-1][:100] for r in rows if r["status"] != "ok")
    parts = [f"<b>{len(rows)}</b> scans: <b>{len(ok)}</b> ok, <b>{len(rows) - len(ok)}</b> errors"]
    if known:
        parts.append(f"formula right on <b>{right}</b> of {len(known)} scans with known truth "
                     f"({right / len(known):.0%})")
    if ok:
        conf = [r["confidence"] for r in ok if r.get("confidence") is not None]
        if conf:
            parts.append(f"mean confidence {np.mean(conf):.2f}")
    text = " · ".join(parts)
    if reasons:
        text += "<ul>" + "".join(f"<li>{n} × {html.escape(reason)}</li>" for reason, n in reasons.most_common(8)) + "</ul>"
    return f"<div class='summary'>{text}</div>"


_STYLE = ("body{font-family:sans-serif;background:#f4f4f4;margin:12px} .card{background:white;margin:6px;padding:8px;"
          "display:inline-block;vertical-align:top;width:860px;border-radius:4px} .card h3{margin:0;font-size:15px}"
          " .error{background:#fde4e4} figure{display:inline-block;margin:2px 4px;text-align:center}"
          " figure img{image-rendering:pixelated;display:block} figcaption{font-size:11px;color:#444}"
          " .src,.model,.params{font-size:11px;color:#555} .right{color:#070} .wrong{color:#a00}"
          " .legend .sw{display:inline-block;width:12px;height:12px;margin:0 2px 0 8px;border:1px solid #888}"
          " .controls{margin:8px 0} .summary{margin:8px 0} .hidden{display:none}")

_SCRIPT = """
function apply(){
  const status=document.getElementById('status').value, truth=document.getElementById('truth').value;
  const min=parseFloat(document.getElementById('minconf').value), text=document.getElementById('text').value;
  const cards=[...document.querySelectorAll('.card')];
  let shown=0;
  for(const c of cards){
    const keep=(status==='all'||c.dataset.status===status)&&(truth==='all'||c.dataset.truth===truth)
      &&(c.dataset.status!=='ok'||!(min>0)||parseFloat(c.dataset.confidence)>=min)
      &&(!text||c.textContent.includes(text));
    c.classList.toggle('hidden',!keep); if(keep) shown++;
  }
  const key=document.getElementById('sort').value, box=document.getElementById('cards');
  cards.sort((a,b)=>key==='source'?a.dataset.source.localeCompare(b.dataset.source):
    (key==='conf-desc'?1:-1)*(parseFloat(b.dataset.confidence)-parseFloat(a.dataset.confidence)));
  for(const c of cards) box.appendChild(c);
  document.getElementById('shown').textContent=shown+' shown';
  document.body.dataset.shown=shown;
}
window.addEventListener('DOMContentLoaded',()=>{
  const q=new URLSearchParams(location.search);
  for(const k of ['status','truth','sort','minconf','text']) if(q.has(k)) document.getElementById(k).value=q.get(k);
  for(const k of ['status','truth','sort','minconf','text']) document.getElementById(k).addEventListener('input',apply);
  apply();
});
"""


def _controls() -> str:
    return ("<div class='controls'>status <select id='status'><option>all</option><option>ok</option>"
            "<option>error</option></select> truth <select id='truth'><option>all</option><option>right</option>"
            "<option>wrong</option><option>unknown</option></select> confidence &ge; "
            "<input id='minconf' type='number' min='0' max='1' step='0.05' value='0'> text "
            "<input id='text' type='search'> sort <select id='sort'><option value='source'>source</option>"
            "<option value='conf-desc'>confidence, high first</option><option value='conf-asc'>confidence, low "
            "first</option></select> <span id='shown'></span></div>")


def label_gallery(rows: list[dict], path: str | Path, title: str = "raypipe labels", window: Window | None = None,
                  nav: str = "") -> Path:
    """One HTML page (images inline) a scientist reads: a summary (counts, error reasons, accuracy where
    the truth is known), the element legend, filters and sorting, and per scan the closest and farthest
    slices, the predicted depiction, the read-back graph and the truth depiction where known, each with
    a scale bar in Å and a visible caption, the scan's parameters, formula, SMILES and confidence; or the
    error. Written atomically."""
    window = window or DEFAULT_WINDOW
    cards = "".join(_card(row, window) for row in rows)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body><h1>{html.escape(title)}</h1>{nav}"
            f"{_summary(rows)}{_legend()}{_controls()}<div id='cards'>{cards}</div>{nav}</body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page)
    tmp.replace(path)
    return path


RUN_PAGE = re.compile(r"^run-(.+?)(?:-p(\d+))?\.html$")


def run_gallery(rows: list[dict], folder: str | Path, run_id: str, *, page_size: int = 200,
                window: Window | None = None) -> Path:
    """This run's rows as bounded pages ``run-<id>.html``, ``run-<id>-p2.html``... (``page_size`` cards
    each) in ``folder``, and ``index.html`` listing every run's pages found there. Only files of these
    names are written; nothing else in the folder is touched. Returns the run's first page."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pages = [rows[k:k + page_size] for k in range(0, len(rows), page_size)] or [[]]
    names = [f"run-{run_id}.html"] + [f"run-{run_id}-p{k + 1}.html" for k in range(1, len(pages))]
    for k, part in enumerate(pages):
        links = " ".join(f"<a href='{n}'>{'page ' + str(j + 1)}</a>" if j != k else f"<b>page {j + 1}</b>"
                         for j, n in enumerate(names))
        nav = f"<p><a href='index.html'>all runs</a> · {links}</p>" if len(pages) > 1 else \
            "<p><a href='index.html'>all runs</a></p>"
        label_gallery(part, folder / names[k], title=f"raypipe run {run_id}" + (f", page {k + 1}" if k else ""),
                      window=window, nav=nav)
    runs = sorted({m.group(1) for p in folder.glob("run-*.html") if (m := RUN_PAGE.match(p.name))}, reverse=True)
    items = "".join(f"<li><a href='run-{html.escape(r)}.html'>{html.escape(r)}</a></li>" for r in runs)
    index = (f"<!doctype html><html><head><meta charset='utf-8'><title>raypipe runs</title><style>{_STYLE}</style>"
             f"</head><body><h1>raypipe labelling runs</h1><ul>{items}</ul></body></html>")
    tmp = folder / ".index.html.tmp"
    tmp.write_text(index)
    tmp.replace(folder / "index.html")
    return folder / names[0]
