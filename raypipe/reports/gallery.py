"""The gallery: one HTML page per labelling run (images inline) that a scientist reads, and an index of
the runs. Its style and script are package resources (``raypipe/reports/static/``)."""

from __future__ import annotations

import base64
import html
import re
from importlib.resources import files
from pathlib import Path

import numpy as np

from raypipe.chem.depiction import decode_png, encode_png
from raypipe.chem.elements import COLORS
from raypipe.images import draw_graph, with_scale_bar
from raypipe.window import DEFAULT_WINDOW, Window


def _static(name: str) -> str:
    return files("raypipe.reports").joinpath("static", name).read_text()


def _fmt(value, unit: str = "", digits: int = 2) -> str:
    return "?" if value is None else f"{value:.{digits}f}{unit}"


def _card(row: dict, window: Window) -> str:
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
        figures.append(_figure(encode_png(np.concatenate(halves, axis=1)), "closest | farthest slice (preprocessed)"))
    figures.append(_figure(encode_png(with_scale_bar(decode_png(row["depiction"]), window.pixel)), "predicted depiction"))
    graph = draw_graph(row.get("atoms") or [], row.get("bonds") or [], window)
    figures.append(_figure(encode_png(with_scale_bar(graph, window.pixel, scale=1)), "read-back graph"))
    if row.get("truth_depiction"):
        figures.append(_figure(encode_png(with_scale_bar(decode_png(row["truth_depiction"]), window.pixel)), "truth"))
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
            f"<style>{_static('gallery.css')}</style><script>{_static('gallery.js')}</script></head><body><h1>{html.escape(title)}</h1>{nav}"
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
    index = (f"<!doctype html><html><head><meta charset='utf-8'><title>raypipe runs</title><style>{_static('gallery.css')}</style>"
             f"</head><body><h1>raypipe labelling runs</h1><ul>{items}</ul></body></html>")
    tmp = folder / ".index.html.tmp"
    tmp.write_text(index)
    tmp.replace(folder / "index.html")
    return folder / names[0]
