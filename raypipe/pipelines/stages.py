"""The stages of the labelling pipeline, each a function (or, for inference, an actor class) that Ray Data
maps over rows or batches; :mod:`raypipe.pipelines.predict` composes them.

file -> ScanStack -> preprocessed tensor -> predicted depiction -> graph -> row:

1. :func:`expand`: a scan unit -> one row per stack source (an HDF5 archive's index is read, not its images);
2. :func:`load`: one stack read, its facts put in typed columns (heights, field of view and where it came
   from, amplitude, stiffness, mode, the truth of a simulated scan drawn as a depiction) and preprocessed
   for the model (only the model's input crosses the object store, and the raw images only where the
   field of view is to be estimated);
3. :class:`Predictor`: inference in an actor (one model load per actor), and the scale search;
4. :func:`identify`: the candidates of the scans that have some, and the library's best matches
   (:mod:`raypipe.identify.search`);
5. :func:`extract`: the prediction read into a graph with its confidence (:mod:`raypipe.model.reading`),
   rows in ``OUTPUT_SCHEMA``.

A stack that cannot be read or processed becomes a row with ``status = "error"``, the reason and its kind;
the stacks beside it are unaffected. Every stage gets the run's :class:`StageContext`.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from raypipe.chem.elements import ELEMENTS
from raypipe.identify.defaults import SCREEN, SHORTLIST, TOP
from raypipe.pipelines.schema import OUTPUT_SCHEMA
from raypipe.storage import StorageOptions, redact
from raypipe.window import Window

_EMPTY = np.zeros((0, 0, 0), np.float32)


@dataclass(frozen=True)
class StageContext:
    """What the stages of one run need, built once by :func:`raypipe.predict_dataset` and shipped with
    every task: the model's grid (``window``, ``n_slices``), where to read, the read limits, a field of
    view over every stack's, whether unknown scales are estimated, the model file (its calibration
    parsed once per worker), and the candidates to rank."""

    window: Window
    n_slices: int
    storage_options: StorageOptions = None
    limits: object = None  # raypipe.scans.limits.ReadLimits; None: from the environment
    fov: tuple[float, ...] | None = None
    estimate_fov: bool = False
    model: object = None  # raypipe.model.files.ModelFile
    candidates: tuple[str, ...] = ()  # SMILES of the run's candidate list
    candidate_names: tuple[str, ...] = ()  # their names
    candidate_cache: str | None = None  # where candidates' simulations are kept between runs
    library: object = None  # the run's library (raypipe.identify.library.Library) in Ray's object store
    shortlist: int = SHORTLIST  # molecules stage 1 keeps for the simulation match
    top: int = TOP  # matches kept per row
    screen: int = SCREEN  # the filter's best screened by depiction down to the shortlist

    @property
    def calibration(self):
        return _calibration(self.model.calibration_json if self.model is not None else None)


@functools.lru_cache(maxsize=4)
def _calibration(text: str | None):
    from raypipe.model.calibration import Calibration

    return Calibration.from_json(text)


def reason(exc: BaseException) -> str:
    """An error row's reason: the exception's type and message, credentials redacted."""
    return redact(f"{type(exc).__name__}: {exc}")


def kind(exc: BaseException) -> str:
    """``permanent`` for what a re-run cannot change (a ScanError: the file is what it is; a DepictionError:
    the model drew no readable molecule), else ``transient`` (I/O, a time limit, a crash)."""
    from raypipe.errors import DepictionError, ScanError

    return "permanent" if isinstance(exc, (ScanError, DepictionError)) else "transient"


def _error(row: dict, exc: BaseException) -> dict:
    return {**row, "status": "error", "error": reason(exc), "error_kind": kind(exc)}


def expand(unit: dict, ctx: StageContext) -> list[dict]:
    """A scan unit (``uri``, ``kind``, ``fingerprint``; ``sources`` when the driver listed them) -> one row
    per stack source; a unit that cannot be listed (a corrupt archive) is one error row."""
    from raypipe.scans.limits import limits_scope, time_limit
    from raypipe.scans.units import ScanUnit, unit_sources

    base = {"unit": unit["uri"], "unit_fingerprint": unit["fingerprint"], "status": "ok", "error": "",
            "error_kind": ""}
    if unit.get("error"):
        return [{**base, "source": unit["uri"], "status": "error", "error": unit["error"], "error_kind": "permanent"}]
    if unit.get("sources"):
        return [{**base, "source": s} for s in unit["sources"]]
    try:
        with limits_scope(ctx.limits) as active, time_limit(active.read_seconds, unit["uri"]):
            sources = unit_sources(ScanUnit(unit["uri"], unit["kind"], unit["fingerprint"]), ctx.storage_options)
        return [{**base, "source": s} for s in sources]
    except Exception as exc:  # a corrupt archive: one error row for the file
        return [_error({**base, "source": unit["uri"]}, exc)]


def _facts(stack, window: Window) -> dict:
    """A loaded stack's typed columns (what the rows keep of its metadata). Between stages an unknown
    ``heights`` or ``fov`` is an empty array and an unknown amplitude or stiffness NaN (a column is one
    Arrow type in every block), an unknown text "" ; :func:`extract` writes them as nulls."""
    meta = stack.metadata
    truth = meta.get("truth") or {}
    fov = _fov(meta.get("fov"))
    candidates = meta.get("candidates")
    if candidates is not None and not isinstance(candidates, list):
        from raypipe.identify.candidates import read_candidates

        candidates = read_candidates(candidates)
    return {"scan_id": stack.scan_id, "format": meta.get("format", ""), "n_images": stack.n,
            "heights": _NONE if stack.heights is None else np.asarray(stack.heights, np.float64),
            "fov": _NONE if fov is None else np.asarray(fov, np.float64),
            "fov_source": meta.get("fov_source") or ("file" if fov else "unknown"),
            "amplitude": _float(meta.get("amplitude")), "stiffness": _float(meta.get("stiffness")),
            "mode": meta.get("mode") or "", "truth_formula": truth.get("formula") or "",
            "truth_smiles": truth.get("smiles") or "",
            "truth_depiction": _drawn_truth(json.dumps({"atoms": truth["atoms"], "bonds": truth.get("bonds", []),
                                                        "smiles": truth.get("smiles") or ""}, sort_keys=True), window)
            or b"" if truth.get("atoms") else b"",
            "sidecar_candidates": "\n".join(candidates or ()), "known_formula": meta.get("formula") or ""}


_NONE = np.zeros(0, np.float64)
NO_FACTS = {"scan_id": "", "format": "", "n_images": 0, "heights": _NONE, "fov": _NONE, "fov_source": "unknown",
            "amplitude": np.nan, "stiffness": np.nan, "mode": "", "truth_formula": "", "truth_smiles": "",
            "truth_depiction": b"", "sidecar_candidates": "", "known_formula": ""}


def load(row: dict, ctx: StageContext, prepare: bool = True) -> dict:
    """One stack read into typed columns and (``prepare``) preprocessed for the model: ``input`` and
    ``input_preview``; the raw ``images`` travel on only for a stack of unknown scale whose field of view
    is to be estimated (without ``prepare``: always, as :func:`raypipe.read_scans` returns them)."""
    from raypipe.scans.limits import limits_scope, time_limit
    from raypipe.scans.units import load_source

    out = {"unit": row["unit"], "unit_fingerprint": row["unit_fingerprint"], "source": row["source"], **NO_FACTS,
           "images": _EMPTY, "status": row.get("status", "ok"), "error": row.get("error", ""),
           "error_kind": row.get("error_kind", "")}
    stack = None
    if out["status"] == "ok":  # else the unit failed before its stacks were known (a corrupt archive)
        try:
            with limits_scope(ctx.limits) as active, time_limit(active.read_seconds, row["source"]):
                stack = load_source(row["source"], ctx.storage_options, ctx.fov)
            out.update(_facts(stack, ctx.window), images=stack.images)
        except Exception as exc:
            out = _error(out, exc)
    return prepared(out, stack, ctx) if prepare else out


def prepared(row: dict, stack, ctx: StageContext) -> dict:
    """A loaded row with the model's ``input`` and ``input_preview``; its raw ``images`` kept only where
    the scale is to be estimated (:class:`Predictor`)."""
    x, preview = np.zeros((ctx.n_slices, ctx.window.size, ctx.window.size), np.float32), b""
    if row["status"] == "ok":
        try:
            x = model_input(stack, ctx)
            preview = input_preview(x)
        except Exception as exc:
            row = _error(row, exc)
    keep = ctx.estimate_fov and row["status"] == "ok" and not len(row["fov"])
    return {**row, "images": row["images"] if keep else _EMPTY, "input": x, "input_preview": preview}


def model_input(stack, ctx: StageContext) -> np.ndarray:
    from raypipe.scans.preprocess import preprocess

    return preprocess(stack, n_slices=ctx.n_slices, window=ctx.window)


def input_preview(x: np.ndarray) -> bytes:
    """The ``input_preview`` column: the closest and farthest model-input slices side by side, a grey PNG
    at low compression (an RGB one at the default level cost more than preprocessing)."""
    from raypipe.chem.depiction import encode_png
    from raypipe.images import grey

    return encode_png(grey(np.concatenate([x[0], x[-1]], axis=1)), compress_level=1)


def as_stack(batch: dict, k: int, fov=None):
    """Row ``k`` of a batch as a ScanStack again (raw ``images``, ``heights``; ``fov`` over the row's)."""
    from raypipe.scans.stack import ScanStack

    heights = np.asarray(batch["heights"][k], np.float64)
    fov = fov if fov is not None else batch["fov"][k]
    return ScanStack(np.asarray(batch["images"][k]), heights if len(heights) else None,
                     {"fov": list(fov) if len(fov) else None}, scan_id=batch["scan_id"][k])


def preprocess_batch(batch: dict, ctx: StageContext) -> dict:
    """Rows of :func:`raypipe.read_scans` (raw images) -> :func:`prepared` rows."""
    out = []
    for k in range(len(batch["status"])):
        row, stack = {key: batch[key][k] for key in batch}, None
        if row["status"] == "ok":
            try:
                stack = as_stack(batch, k)
            except Exception as exc:  # not a stack at all: the row's error
                row = _error(row, exc)
        out.append(prepared(row, stack, ctx))
    return {key: _column([r[key] for r in out]) for key in out[0]} if out else batch


def _column(values: list):
    if values and all(isinstance(v, np.ndarray) for v in values) and len({v.shape for v in values}) == 1:
        return np.stack(values)
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


class Predictor:
    """Inference actor: loads the model once and predicts the rows that are ok. Rows that carry raw
    ``images`` (a stack of unknown scale, with ``estimate_fov``) are read at several fields of view and
    the most confident reading kept (:mod:`raypipe.identify.scale`)."""

    def __init__(self, ctx: StageContext, threads: int, keep_input: bool = False) -> None:
        import torch

        from raypipe.model.inference import load_model

        torch.set_num_threads(max(1, threads))
        self.ctx = ctx
        self.model = load_model(ctx.model, storage_options=ctx.storage_options)
        self.keep_input = keep_input

    def _estimate_scales(self, batch: dict) -> dict:
        from raypipe.identify.scale import estimate_fov

        inputs, previews = batch["input"].copy(), list(batch["input_preview"])
        fovs, sources = list(batch["fov"]), list(batch["fov_source"])
        for k, images in enumerate(batch["images"]):
            if batch["status"][k] != "ok" or images is None or np.asarray(images).size == 0:
                continue
            fov, _ = estimate_fov(as_stack(batch, k), self.model)
            stack = as_stack(batch, k, fov=(fov, fov * np.asarray(images).shape[1] / np.asarray(images).shape[2]))
            inputs[k] = model_input(stack, self.ctx)
            previews[k] = input_preview(inputs[k])
            fovs[k], sources[k] = np.asarray(stack.metadata["fov"], np.float64), "estimated"
        out = {key: v for key, v in batch.items() if key != "images"}
        return {**out, "input": inputs, "input_preview": _column(previews), "fov": _column(fovs),
                "fov_source": _column(sources)}

    def __call__(self, batch: dict) -> dict:
        if "images" in batch:
            batch = self._estimate_scales(batch)
        ok = np.array([s == "ok" for s in batch["status"]])
        size = self.model.config.size
        depictions = np.zeros((len(ok), size, size, 3), np.uint8)
        # a model with the atom-centre output: its map travels on to the extraction stage
        centres = np.zeros((len(ok), size, size), np.float32) if self.model.has_centres else None
        # and one with the count output: its expected atoms of each element
        counts = np.zeros((len(ok), len(ELEMENTS)), np.float32) if self.model.has_counts else None
        margin_mean, margin_low = np.full(len(ok), 0.5), np.full(len(ok), 0.5)
        prediction = self.model.infer(batch["input"][ok])
        depictions[ok] = prediction.depictions
        for n, k in enumerate(np.flatnonzero(ok)):
            margin_mean[k], margin_low[k] = prediction.margin_stats(n)
        if centres is not None:
            centres[ok] = prediction.centres
        if counts is not None:
            counts[ok] = prediction.counts
        out = {k: v for k, v in batch.items() if k != "input" or self.keep_input}
        out = {**out, "depiction": depictions, "margin_mean": margin_mean, "margin_low": margin_low,
               "model": np.array([self.model.tag] * len(ok), dtype=object)}
        return {**out, **{key: value for key, value in (("centres", centres), ("counts", counts))
                          if value is not None}}


_LIBRARIES: dict = {}  # per worker process: the run's library, fetched once from the object store


def _library(ref):
    import ray

    key = ref.hex()
    if key not in _LIBRARIES:
        _LIBRARIES.clear()
        _LIBRARIES[key] = ray.get(ref)
    return _LIBRARIES[key]


@functools.lru_cache(maxsize=16)
def _candidate_library(smiles: tuple[str, ...], names: tuple[str, ...], window: Window):
    """A candidate list as a tiny library (prepared once per worker process and list)."""
    from raypipe.identify.library import Library

    return Library.from_smiles(list(smiles), list(names), window=window)


@functools.lru_cache(maxsize=8)
def _cache(window: Window, folder: str | None, storage_options_json: str, conformers: int):
    """One simulation cache per worker process and folder: each molecule is simulated once per folder."""
    from raypipe.identify.candidates import CandidateCache

    return CandidateCache(window, folder, storage_options=json.loads(storage_options_json), conformers=conformers)


def identify(batch: dict, ctx: StageContext) -> dict:
    """Each ok row's matches: ``candidates`` (its sidecar's list, else the run's) and ``identified`` (the run's
    library), both by :mod:`raypipe.identify.search` (JSON between stages: one Arrow type in every block)."""
    from raypipe.identify.search import LIBRARY_CONFORMERS, Query, match, shortlist_screened

    options = json.dumps(ctx.storage_options or {}, sort_keys=True)
    library = _library(ctx.library) if ctx.library is not None else None
    found: dict[str, list] = {"candidates": [], "identified": []}
    for k, status in enumerate(batch["status"]):
        own = tuple(batch["sidecar_candidates"][k].split("\n")) if batch["sidecar_candidates"][k] else ()
        given = (own, own) if own else (ctx.candidates, ctx.candidate_names or ctx.candidates)
        lists = {"candidates": (_candidate_library(*given, ctx.window), ctx.candidate_cache, 3) if given[0] else None,
                 "identified": (library, library.cache_uri, LIBRARY_CONFORMERS) if library is not None else None}
        if status != "ok" or not any(lists.values()):
            for key in found:
                found[key].append("")
            continue
        x, depiction = batch["input"][k], batch["depiction"][k]
        reading = _read(batch, k, ctx)
        query = Query.of(reading.graph, reading.confidence, x, ctx.window, scale_known=bool(len(batch["fov"][k])))
        for key, chosen in lists.items():
            if chosen is None:
                found[key].append("")
                continue
            lib, folder, conformers = chosen
            cache = _cache(ctx.window, folder, options, conformers)
            indices, scores, screened = shortlist_screened(lib, query, depiction, cache, ctx.shortlist, ctx.screen)
            found[key].append(json.dumps(match(lib, indices, scores, depiction, x, cache, top=ctx.top,
                                               depiction_scores=screened)))
    out = {k: v for k, v in batch.items() if k != "input"}
    return {**out, **{key: np.array(values, dtype=object) for key, values in found.items()}}


def extract(batch: dict, ctx: StageContext) -> pa.Table:
    """Read each ok row's prediction (:func:`raypipe.model.reading.read_one`) and build the output rows."""
    from raypipe.chem.depiction import encode_png

    rows = []
    for k in range(len(batch["status"])):
        row = {
            "scan_id": batch["scan_id"][k], "source": redact(batch["source"][k]), "format": batch["format"][k],
            "n_images": int(batch["n_images"][k]), "heights": _list(batch["heights"][k]),
            "amplitude": _number(batch["amplitude"][k]), "stiffness": _number(batch["stiffness"][k]),
            "mode": batch["mode"][k] or None, "fov": _list(batch["fov"][k]), "fov_source": batch["fov_source"][k],
            "input_preview": batch["input_preview"][k] or None,
            "depiction": None, "atoms": None, "bonds": None, "formula": None,
            "known_formula": batch["known_formula"][k] or None if "known_formula" in batch else None,
            "formula_counts": None,
            "smiles": None, "confidence": None,
            "depiction_quality": None,
            "truth_formula": batch["truth_formula"][k] or None, "truth_smiles": batch["truth_smiles"][k] or None,
            "truth_depiction": batch["truth_depiction"][k] or None,
            "candidates": _matches(batch, "candidates", k), "identified": _matches(batch, "identified", k),
            "model": batch["model"][k], "status": batch["status"][k], "error": batch["error"][k] or None,
            "error_kind": batch["error_kind"][k] or None, "unit": redact(batch["unit"][k]),
            "unit_fingerprint": batch["unit_fingerprint"][k],
        }
        if row["status"] == "ok":
            depiction = batch["depiction"][k]
            try:
                reading = _read(batch, k, ctx)
                if reading.error is not None:  # the model drew something no graph can be read from: show it
                    row.update(status="error", error=reason(reading.error), error_kind=kind(reading.error),
                               depiction=encode_png(depiction))
                else:
                    atoms, bonds = reading.graph.to_rows()
                    row.update(depiction=encode_png(depiction), atoms=atoms, bonds=bonds, formula=reading.formula,
                               formula_counts=reading.formula_counts,
                               smiles=reading.graph.smiles, depiction_quality=reading.graph.confidence,
                               confidence=reading.confidence)
            except Exception as exc:
                row.update(status="error", error=reason(exc), error_kind=kind(exc))
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA)


def _read(batch: dict, k: int, ctx: StageContext):
    """Row ``k``'s prediction read (:func:`raypipe.model.reading.read_one`) with what the model gave (its
    centre map and counts where it has those outputs) and the formula the scan's sidecar gives."""
    from raypipe.chem.agreement import ElementCounts
    from raypipe.model.inference import element_counts
    from raypipe.model.reading import read_one

    known = batch["known_formula"][k] if "known_formula" in batch else ""
    counts = element_counts(batch["counts"][k]) if "counts" in batch else None
    return read_one(batch["depiction"][k], ctx.window, centres=batch["centres"][k] if "centres" in batch else None,
                    counts=counts, known=ElementCounts.known(known) if known else None,
                    margins=(batch["margin_mean"][k], batch["margin_low"][k]), calibration=ctx.calibration)


def _matches(batch: dict, key: str, k: int) -> list[dict] | None:
    return json.loads(batch[key][k]) if key in batch and batch[key][k] else None


def _list(value) -> list[float] | None:
    return None if value is None or not len(value) else [float(v) for v in value]


def _float(value) -> float:
    """A number, NaN where unknown (written as null by :func:`extract`)."""
    try:
        return np.nan if value is None else float(value)
    except (TypeError, ValueError):
        return np.nan


def _number(value) -> float | None:
    value = _float(value)
    return None if np.isnan(value) else value


def _fov(fov) -> list[float] | None:
    if not fov:
        return None
    return [float(v) for v in (fov if isinstance(fov, (list, tuple)) else (fov, fov))]


@functools.lru_cache(maxsize=512)
def _drawn_truth(truth_json: str, window: Window) -> bytes | None:
    """The true molecule drawn on the model's window, from the atoms a simulated scan carries: drawn once
    per molecule and window in a worker (a simulated archive holds each molecule under several parameter
    sets)."""
    from raypipe.chem.depiction import encode_png, render_depiction
    from raypipe.chem.molecule import Molecule

    truth = json.loads(truth_json)
    atoms = truth["atoms"]
    try:
        molecule = Molecule(tuple(a["element"] for a in atoms),
                            np.array([[a["x"], a["y"], a["z"]] for a in atoms], dtype=np.float64),
                            np.zeros(len(atoms)), tuple((b["i"], b["j"], b.get("order", 1.0)) for b in truth["bonds"]),
                            truth["smiles"])
        return encode_png(render_depiction(molecule, window))
    except (KeyError, TypeError, ValueError):
        return None
