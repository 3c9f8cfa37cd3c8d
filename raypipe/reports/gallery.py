"""The gallery: one HTML page per labelling run (images inline) that a scientist reads, and an index of
the runs. Its style and script are package resources (``raypipe/reports/static/``)."""

from __future__ import annotations

import base64
import functools
import html
import json
import re
from importlib.resources import files
from pathlib import Path

import numpy as np

from raypipe.chem.depiction import decode_png, encode_png
from raypipe.chem.elements import COLORS
from raypipe.images import draw_graph, grey_rgb, with_scale_bar
from raypipe.window import DEFAULT_WINDOW, Window


def _static(name: str) -> str:
    return files("raypipe.reports").joinpath("static", name).read_text()


def _fmt(value, unit: str = "", digits: int = 2) -> str:
    return "?" if value is None else f"{value:.{digits}f}{unit}"


RELIABLE = 0.5  # a reading whose calibrated confidence is below this is shown as unreliable


def _bar_note(fov_source: str | None) -> str:
    """What a scale bar can claim: the scale is known (file, sidecar, user), estimated, or assumed."""
    return {"estimated": "estimated", "unknown": "assumed", None: "assumed"}.get(fov_source, "")


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
        figure = _figure(encode_png(decode_png(row["depiction"])), "what the model drew") if row.get("depiction") else ""
        return f"<div {attrs}>{head}<p class='why'>error ({html.escape(row.get('error_kind') or '')}): " \
               f"{html.escape(row.get('error') or '')}</p>{figure}</div>"
    fov = row.get("fov")
    note = _bar_note(row.get("fov_source") if fov else None)
    heights = row.get("heights") or []
    params = (f"amplitude {_fmt(row.get('amplitude'), ' Å')} · stiffness {_fmt(row.get('stiffness'), ' N/m')} · "
              f"{row.get('n_images')} images" + (f", Δz {heights[-1] - heights[0]:.2f} Å" if len(heights) > 1 else "")
              + " · fov " + (f"{fov[0]:.1f} × {fov[1]:.1f} Å ({row.get('fov_source') or 'file'})" if fov
                             else "unknown: the image was fitted to the window, its scale bars are assumed"))
    figures = []
    if row.get("input_preview"):
        preview = decode_png(row["input_preview"])
        halves = [with_scale_bar(preview[:, k * window.size:(k + 1) * window.size], window.pixel, note=note)
                  for k in (0, 1)]
        figures.append(_figure(encode_png(np.concatenate(halves, axis=1)), "closest | farthest slice (preprocessed)"))
    figures.append(_figure(encode_png(with_scale_bar(decode_png(row["depiction"]), window.pixel, note=note)),
                           "predicted depiction"))
    graph = draw_graph(row.get("atoms") or [], row.get("bonds") or [], window)
    figures.append(_figure(encode_png(with_scale_bar(graph, window.pixel, scale=1, note=note)), "read-back graph"))
    if row.get("truth_depiction"):
        truth_graph = _truth_graph(row["truth_depiction"], window)
        figures.append(_figure(encode_png(with_scale_bar(truth_graph, window.pixel, scale=1)), "truth"))
    verdict = ("<span class='right'>&#10003; formula right</span>" if right else
               "<span class='wrong'>&#10007; formula wrong</span>" if known else "")
    truth = (f"<div>truth: <b>{html.escape(row['truth_formula'])}</b> {html.escape(row.get('truth_smiles') or '')} "
             f"{verdict}</div>" if known else "")
    quality = row.get("depiction_quality")
    reliable = confidence is not None and confidence >= RELIABLE
    formula = html.escape(row.get("formula") or "(no atoms read)")
    reading = (f"<div class='res'>read: <b>{formula}</b> {html.escape(row.get('smiles') or '(no valid SMILES)')}</div>"
               if reliable else
               f"<div class='res unreliable'>read: {formula} {html.escape(row.get('smiles') or '')} "
               f"<span class='warn'>unreliable reading (confidence {_fmt(confidence)})</span></div>")
    matches = _matches(row.get("identified"), "best matches in the library", window, note) \
        + _matches(row.get("candidates"), "candidates ranked", window, note)
    known_formula = row.get("known_formula")  # the sidecar's: the reading was made to agree with it
    reading += (f"<div class='known'>read to agree with the sidecar's formula {html.escape(known_formula)}</div>"
                if known_formula else "")
    counted = row.get("formula_counts")  # a model with a count output: its own formula beside the graph's
    reading += f"<div class='counts'>count output: {html.escape(counted)}</div>" if counted else ""
    return (f"<div {attrs}>{head}<div class='figs'>{''.join(figures)}</div>{reading}"
            f"<div>confidence {_fmt(confidence)}" + (f" · drawing quality {_fmt(quality)}" if quality is not None else "")
            + f"</div>{truth}{matches}<div class='params'>{params}</div>"
            f"<div class='model'>model {html.escape(row.get('model') or '')}</div></div>")


def _truth_graph(png: bytes, window: Window) -> np.ndarray:
    """The truth drawn as the read-back graph is: its depiction read back (exact for 99 % of molecules)."""
    from raypipe.chem.graph import read_graph

    atoms, bonds = read_graph(decode_png(png), window).to_rows()
    return draw_graph(atoms, bonds, window)


@functools.lru_cache(maxsize=256)
def _molecule_picture(smiles: str, window: Window) -> np.ndarray | None:
    """A candidate drawn as a graph, from its SMILES (its own conformer, centred on the window)."""
    from raypipe.chem.graph import MolGraph
    from raypipe.chem.molecule import Molecule

    try:
        molecule = Molecule.from_smiles(smiles)
    except ValueError:
        return None
    atoms, bonds = MolGraph.from_molecule(molecule).to_rows()
    return draw_graph(atoms, [dict(b, order=o) for b, (_, _, o) in zip(bonds, molecule.bonds)], window)


def _matches(ranked, title: str, window: Window, note: str, drawn: int = 3) -> str:
    """The top matches: the best ``drawn`` as pictures beside the scan, all in a numbered list."""
    if not ranked:
        return ""
    pictures = []
    for match in ranked[:drawn]:
        picture = _molecule_picture(match["smiles"], window)
        if picture is not None:
            label = f"{match['rank']}. {match.get('name') or match['smiles']} ({match['score']:.2f})"
            pictures.append(_figure(encode_png(with_scale_bar(picture, window.pixel, scale=1)), html.escape(label)))

    from raypipe.identify.search import probability_text

    def scores(m: dict) -> str:
        parts = [f"{k} {m[k + '_score']:.2f}" for k in ("simulation", "depiction") if m.get(k + "_score") is not None]
        if m.get("filter_score") is not None:  # a probability over the whole library: often small
            parts.append(f"filter p {probability_text(m['filter_score'])}")
        return ", ".join(parts)

    items = "".join(f"<li>{html.escape(m.get('name') or '')} {html.escape(m['smiles'])} — {m['score']:.2f} "
                    f"({scores(m)})</li>" for m in ranked)
    return f"<div class='cands'>{title}:<div class='figs'>{''.join(pictures)}</div><ol>{items}</ol></div>"


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


def page(path: str | Path, title: str, body: str, script: bool = False) -> Path:
    """An HTML page with the gallery's style (and script), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    js = f"<script>{_static('gallery.js')}</script>" if script else ""
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_static('gallery.css')}</style>{js}</head><body>{body}</body></html>")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def label_gallery(rows: list[dict], path: str | Path, title: str = "raypipe labels", window: Window | None = None,
                  nav: str = "") -> Path:
    """One HTML page (images inline) a scientist reads: a summary (counts, error reasons, accuracy where
    the truth is known), the element legend, filters and sorting, and per scan the closest and farthest
    slices, the predicted depiction, the read-back graph and the truth drawn alike where known, each with
    a scale bar in Å (marked assumed or estimated where the scale is not known) and a visible caption, the
    scan's parameters, the reading (marked unreliable below a confidence of 0.5), and the best matches of a
    library or candidate list drawn beside it; or the error."""
    window = window or DEFAULT_WINDOW
    cards = "".join(_card(row, window) for row in rows)
    return page(path, title, f"<h1>{html.escape(title)}</h1>{nav}{_summary(rows)}{_legend()}{_controls()}"
                             f"<div id='cards'>{cards}</div>{nav}", script=True)


RUN_PAGE = re.compile(r"^run-(.+?)(?:-p(\d+))?\.html$")


def run_summary(rows: list[dict], run_id: str) -> dict:
    """A run's counts for the index page: rows, ok, errors, and formulas right where the truth is known."""
    ok = [r for r in rows if r["status"] == "ok"]
    known = [r for r in ok if r.get("truth_formula")]
    dates = {r.get("run_date") for r in rows if r.get("run_date")}
    return {"run_id": run_id, "run_date": min(dates) if dates else "", "rows": len(rows), "ok": len(ok),
            "errors": len(rows) - len(ok), "known": len(known),
            "right": sum(r.get("formula") == r.get("truth_formula") for r in known)}


def run_gallery(rows: list[dict], folder: str | Path, run_id: str, *, page_size: int = 200,
                window: Window | None = None) -> Path:
    """This run's rows as bounded pages ``run-<id>.html``, ``run-<id>-p2.html``... (``page_size`` cards
    each) in ``folder``, its counts in ``run-<id>.json``, and ``index.html`` listing every run found there with
    its date, counts and accuracy where the truth is known. Only files of these names are written; nothing
    else in the folder is touched. Returns the run's first page."""
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
    counts = folder / f"run-{run_id}.json"
    tmp = folder / f".{counts.name}.tmp"
    tmp.write_text(json.dumps(run_summary(rows, run_id)))
    tmp.replace(counts)
    _index(folder)
    return folder / names[0]


def _index(folder: Path) -> Path:
    runs = sorted({m.group(1) for p in folder.glob("run-*.html") if (m := RUN_PAGE.match(p.name))}, reverse=True)
    lines = []
    for run in runs:
        try:
            c = json.loads((folder / f"run-{run}.json").read_text())
        except (OSError, ValueError):
            c = {}
        accuracy = (f"{c['right']} of {c['known']} formulas right ({c['right'] / c['known']:.0%})"
                    if c.get("known") else "truth unknown")
        counts = (f"{c['rows']} scans: {c['ok']} ok, {c['errors']} errors · {accuracy}" if c else "")
        lines.append(f"<tr><td>{html.escape(c.get('run_date', ''))}</td><td><a href='run-{html.escape(run)}.html'>"
                     f"{html.escape(run)}</a></td><td>{html.escape(counts)}</td></tr>")
    body = ("<h1>raypipe labelling runs</h1><table class='runs'><tr><th>date</th><th>run</th><th>scans</th></tr>"
            + "".join(lines) + "</table>")
    return page(folder / "index.html", "raypipe runs", body)


def identification_page(result, path: str | Path, window: Window | None = None) -> Path:
    """``raypipe identify``'s one-scan page: the scan, its reading and the top matches drawn beside it."""
    window = window or DEFAULT_WINDOW
    note = _bar_note(result.fov_source if result.fov else None)
    halves = [with_scale_bar(grey_rgb(result.input[k]), window.pixel, note=note) for k in (0, -1)]
    figures = [_figure(encode_png(np.concatenate(halves, axis=1)), "closest | farthest slice (preprocessed)"),
               _figure(encode_png(with_scale_bar(result.depiction, window.pixel, note=note)), "predicted depiction")]
    conf = "?" if result.confidence is None else f"{result.confidence:.2f}"
    reliable = result.confidence is not None and result.confidence >= RELIABLE
    reading = (f"<div class='res'>read: <b>{html.escape(result.formula)}</b></div>" if reliable else
               f"<div class='res unreliable'>read: {html.escape(result.formula or '(no atoms)')} "
               f"<span class='warn'>unreliable reading (confidence {conf})</span></div>")
    body = (f"<h1>{html.escape(result.scan)}</h1><div class='card'><div class='figs'>{''.join(figures)}</div>"
            f"{reading}{_matches(result.matches, f'best matches in {html.escape(result.library)}', window, note)}"
            f"<div class='params'>{result.seconds:.1f} s, {result.simulated} candidates simulated</div></div>")
    return page(path, f"raypipe identify {result.scan}", body)
