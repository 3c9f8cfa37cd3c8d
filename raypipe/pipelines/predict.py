"""Batch labelling on Ray Data: ``read_scans`` and ``predict_dataset``.

file -> ScanStack -> preprocessed tensor -> predicted depiction -> graph -> row:

1. the scan units under the URI are listed (``raypipe.scans.units``); HDF5 archives are expanded into
   their stacks by tasks, each reading only the archive's index; the stacks then travel in blocks of at
   most ``READ_BLOCK_ROWS`` (16, env ``RAYPIPE_READ_BLOCK_ROWS``; 0: one block per unit), a streaming
   repartition, so that one archive is read by several tasks at once and no block in flight holds a
   whole archive (measured: ``bench/bench_label.py``, README "Performance settings");
2. ``read_scans``: each stack is loaded by a task (one row per stack);
3. preprocessing (``raypipe.preprocess``) in CPU tasks;
4. inference in a pool of actors, one model load per actor: one GPU each when the cluster has GPUs,
   else one CPU each, leaving at least one CPU for the reads, preprocessing, extraction and writes;
5. graph extraction in CPU tasks; the rows get the output schema (``OUTPUT_SCHEMA``).
A stack that cannot be read or processed becomes a row with ``status = "error"`` and the reason;
the stacks beside it are unaffected.
"""

from __future__ import annotations

import functools
import json
import os
import warnings

import numpy as np
import pyarrow as pa
import ray

from raypipe.model.calibration import margin_stats
from raypipe.storage import StorageOptions, redact

def _field(name: str, kind: pa.DataType, doc: str, unit: str | None = None) -> pa.Field:
    """A column with its description (and unit) in the Arrow field metadata: ``doc`` is what PyIceberg
    writes as the Iceberg column's doc, so every reader of the table sees it."""
    text = f"{doc} [{unit}]" if unit else doc
    metadata = {b"doc": text.encode()} | ({b"unit": unit.encode()} if unit else {})
    return pa.field(name, kind, metadata=metadata)


ATOM_STRUCT = pa.struct([
    _field("element", pa.string(), "element symbol (H C N O F S P Cl Br I)"),
    _field("x", pa.float64(), "position in the scan window, left to right", "Å"),
    _field("y", pa.float64(), "position in the scan window, bottom to top", "Å"),
    _field("confidence", pa.float64(), "how fully the atom's ball is drawn in the depiction (0-1)"),
])
BOND_STRUCT = pa.struct([
    _field("i", pa.int32(), "index of the first atom in atoms"),
    _field("j", pa.int32(), "index of the second atom in atoms"),
    _field("order", pa.float64(), "bond order perceived by RDKit: 1, 1.5 (aromatic), 2, 3; null when the graph "
                                  "is no valid molecule"),
    _field("confidence", pa.float64(), "how continuous the stick is in the depiction (0-1)"),
])
CANDIDATE_STRUCT = pa.struct([
    _field("smiles", pa.string(), "the candidate (canonical SMILES)"),
    _field("score", pa.float64(), "combined score: the mean of the two below (0-1)"),
    _field("depiction_score", pa.float64(), "per-element overlap of the predicted depiction with the candidate's, "
                                            "best over rotation, mirror, translation and scale (0-1)"),
    _field("simulation_score", pa.float64(), "model-free: correlation of the measured stack with the candidate's "
                                             "ppafm simulation, best over the same poses (0-1)"),
    _field("rank", pa.int32(), "1 = the best candidate"),
])
OUTPUT_SCHEMA = pa.schema([
    _field("scan_id", pa.string(), "the stack's id: its name plus a hash of its values"),
    _field("source", pa.string(), "where the stack came from: file.h5::id, a folder, a file, an s3:// URI"),
    _field("format", pa.string(), "the reader that read it: raypipe-hdf5, image-folder, nanonis-sxm, npz, "
                                  "quam-afm"),
    _field("n_images", pa.int32(), "images in the stack as read (before resampling to the model's slices)"),
    _field("heights", pa.list_(pa.float64()), "relative tip heights of the images, closest first; null when "
                                              "unknown", "Å"),
    _field("amplitude", pa.float64(), "oscillation amplitude (peak to peak) where the format records it", "Å"),
    _field("stiffness", pa.float64(), "CO tip lateral stiffness where the format records it", "N/m"),
    _field("mode", pa.string(), "acquisition mode where known (FM df, AM ...)"),
    _field("fov", pa.list_(pa.float64()), "field of view (x, y) of the scan as used; null when unknown (the "
                                          "image is then padded to a square and fitted to the model's window)", "Å"),
    _field("fov_source", pa.string(), "where the field of view came from: user (--fov), sidecar (raypipe.json), "
                                      "file (the format records it), estimated, or unknown"),
    _field("input_preview", pa.binary(), "PNG: the closest and farthest preprocessed slices side by side"),
    _field("depiction", pa.binary(), "PNG: the predicted ball-and-stick depiction on the model's window"),
    _field("atoms", pa.list_(ATOM_STRUCT), "atoms read back from the depiction"),
    _field("bonds", pa.list_(BOND_STRUCT), "bonds read back from the depiction"),
    _field("formula", pa.string(), "Hill formula of the read-back graph, hydrogens included"),
    _field("smiles", pa.string(), "canonical SMILES when the graph is a valid molecule, else null"),
    _field("confidence", pa.float64(), "probability that the formula is right, calibrated on simulated stacks "
                                       "with known truth and stored with the model (0-1); null for a model "
                                       "without calibration"),
    _field("depiction_quality", pa.float64(), "how cleanly the depiction is drawn: the weakest atom or bond "
                                              "drawing score of the graph (0-1); not a probability of being right"),
    _field("truth_formula", pa.string(), "the true formula where the scan's metadata holds it (simulations)"),
    _field("truth_smiles", pa.string(), "the true SMILES where the scan's metadata holds it (simulations)"),
    _field("truth_depiction", pa.binary(), "PNG: the true molecule's depiction on the model's window, where the "
                                           "scan's metadata holds its atoms (simulations)"),
    _field("candidates", pa.list_(CANDIDATE_STRUCT), "the candidate molecules ranked for this scan, best first "
                                                    "(when candidates were given); null otherwise"),
    _field("model", pa.string(), "the model that labelled the row: name@first 12 hex of its file's SHA-256"),
    _field("status", pa.string(), "ok or error"),
    _field("error", pa.string(), "for an error row: the file and the reason"),
    _field("error_kind", pa.string(), "permanent (a ScanError: the file is what it is; a DepictionError: "
                                      "the model drew no readable molecule, the depiction kept) or transient (I/O, "
                                      "a time limit, a crash: retried by the next run); null for ok rows"),
    _field("unit", pa.string(), "the scan unit (file or folder) the row came from"),
    _field("unit_fingerprint", pa.string(), "fingerprint of the unit's files (names, sizes, times) when read"),
])

_EMPTY = np.zeros((0, 0, 0), np.float32)
# CPU stages ask for half a CPU: they are light, two share a core, and a request unlike the inference
# actors' keeps Ray Data from fusing them into the actors (reads would then wait on inference)
CPU_STAGE = {"num_cpus": 0.5}
# stacks per block after an archive is expanded (module docs); a block of 16 model inputs is ~10 MB
READ_BLOCK_ROWS = int(os.environ.get("RAYPIPE_READ_BLOCK_ROWS", "16"))
# Ray Data's object-store budget per inference actor, MiB (0: Ray's default, a fraction of the object
# store, ~3.5 GiB here): the blocks in flight between stages stay within it. Measured on 2 cores, 3,000
# stacks: peak 2,683 against 3,057 MiB, 21.2 against 20.3 stacks/s (README "Performance settings")
OBJECT_STORE_MB = int(os.environ.get("RAYPIPE_OBJECT_STORE_MB", "200"))
# torch threads per inference actor (0: from the pool, ``inference_pool``)
INFERENCE_THREADS = int(os.environ.get("RAYPIPE_INFERENCE_THREADS", "0"))


def _reason(exc: BaseException) -> str:
    """An error row's reason: the exception's type and message, credentials redacted."""
    return redact(f"{type(exc).__name__}: {exc}")


def _kind(exc: BaseException) -> str:
    from raypipe.errors import DepictionError, ScanError

    return "permanent" if isinstance(exc, (ScanError, DepictionError)) else "transient"


def _error(row: dict, exc: BaseException) -> dict:
    return {**row, "status": "error", "error": _reason(exc), "error_kind": _kind(exc)}


def _expand(unit: dict, storage_options: StorageOptions, limits=None) -> list[dict]:
    from raypipe.scans.limits import limits_scope, time_limit
    from raypipe.scans.units import ScanUnit, unit_sources

    base = {"unit": unit["uri"], "unit_key": unit["key"], "unit_fingerprint": unit["fingerprint"],
            "status": "ok", "error": "", "error_kind": ""}
    try:
        with limits_scope(limits) as active, time_limit(active.read_seconds, unit["uri"]):
            sources = unit_sources(ScanUnit(unit["uri"], unit["kind"], unit["fingerprint"]), storage_options)
        return [{**base, "source": s} for s in sources]
    except Exception as exc:  # a corrupt archive: one error row for the file
        return [_error({**base, "source": unit["uri"]}, exc)]


def _load(row: dict, storage_options: StorageOptions, limits=None, fov=None, grid: dict | None = None,
          keep_unknown_fov: bool = False) -> dict:
    """One stack read (and, with ``grid``, preprocessed for the model in the same task: only the model's
    input crosses the object store, not the raw images)."""
    from raypipe.scans.limits import limits_scope, time_limit
    from raypipe.scans.units import load_source

    out = {"unit": row["unit"], "unit_key": row["unit_key"], "unit_fingerprint": row["unit_fingerprint"],
           "source": row["source"], "scan_id": "", "format": "", "n_images": 0, "heights": "null",
           "metadata": "{}", "images": _EMPTY, "status": row.get("status", "ok"), "error": row.get("error", ""),
           "error_kind": row.get("error_kind", "")}
    if out["status"] != "ok":  # the unit failed before its stacks were known (a corrupt archive)
        return out if grid is None else _prepared(out, None, grid, keep_unknown_fov)
    try:
        with limits_scope(limits) as active, time_limit(active.read_seconds, row["source"]):
            stack = load_source(row["source"], storage_options, fov)
    except Exception as exc:
        return _error(out, exc) if grid is None else _prepared(_error(out, exc), None, grid, keep_unknown_fov)
    loaded = {**out, "scan_id": stack.scan_id, "format": stack.metadata.get("format", ""), "n_images": stack.n,
              "heights": json.dumps(None if stack.heights is None else stack.heights.tolist()),
              "metadata": json.dumps(stack.metadata, default=str), "images": stack.images}
    return loaded if grid is None else _prepared(loaded, stack, grid, keep_unknown_fov)


def _prepared(row: dict, stack, grid: dict, keep_unknown_fov: bool) -> dict:
    """A loaded row with the model's ``input`` and ``input_preview`` instead of its raw ``images`` (kept
    only for a stack of unknown scale when the scale is to be searched)."""
    x, preview = np.zeros((grid["n_slices"], grid["size"], grid["size"]), np.float32), b""
    if row["status"] == "ok":
        try:
            x, preview = _model_input(stack, grid)
        except Exception as exc:
            row = _error(row, exc)
    unknown = keep_unknown_fov and row["status"] == "ok" and stack is not None and not stack.metadata.get("fov")
    out = {k: v for k, v in row.items() if k != "images"}
    if keep_unknown_fov:
        out["images"] = stack.images if unknown else _EMPTY
    out["metadata"] = out.get("metadata", "{}")
    return {**out, "input": x, "input_preview": preview}


def _model_input(stack, grid: dict) -> tuple[np.ndarray, bytes]:
    from raypipe.scans.preprocess import preprocess
    from raypipe.window import Window

    x = preprocess(stack, n_slices=grid["n_slices"], window=Window(size=grid["size"], fov=grid["fov"]))
    return x, input_preview(x)


def input_preview(x: np.ndarray) -> bytes:
    """The ``input_preview`` column: the closest and farthest model-input slices side by side, a grey PNG
    at low compression (an RGB one at the default level cost 6-16 ms a stack, more than preprocessing)."""
    from raypipe.chem.depiction import encode_png
    from raypipe.reports import grey

    return encode_png(grey(np.concatenate([x[0], x[-1]], axis=1)), compress_level=1)


def read_scans(uri: str, *, storage_options: StorageOptions = None, fov=None) -> ray.data.Dataset:
    """One row per stack under ``uri`` (local folder/file or ``s3://`` prefix), in any supported format.

    Columns: ``unit``, ``unit_key``, ``source``, ``scan_id``, ``format``, ``n_images``, ``heights`` (JSON:
    a list of Å or null), ``metadata`` (JSON), ``images`` (n, H, W) float32, ``status``, ``error``.
    """
    from raypipe.scans.units import find_units

    units, _ = find_units(uri, storage_options)
    if not units:
        raise FileNotFoundError(f"{redact(uri)}: no scans (HDF5, NPZ, image or SXM folders) found")
    return read_units([{"uri": u.uri, "kind": u.kind, "fingerprint": u.fingerprint, "key": u.key} for u in units],
                      storage_options, fov=fov)


def read_units(units: list[dict], storage_options: StorageOptions = None, limits=None, fov=None,
               grid: dict | None = None, keep_unknown_fov: bool = False) -> ray.data.Dataset:
    """``read_scans`` for units already listed (``label_archive`` lists them to consult its table); with
    ``grid`` (the model's ``n_slices``, ``size``, ``fov``) each stack is also preprocessed in its read task.

    ``limits``: a :class:`raypipe.scans.limits.ReadLimits` (default: from the environment). Ray retries a
    failed read task at most once (out-of-memory kills included, where the cluster was started by raypipe).
    """
    items = ray.data.from_items(units, override_num_blocks=max(1, min(len(units), 200)))
    kwargs = {"storage_options": storage_options, "limits": limits}
    with warnings.catch_warnings():  # max_retries has no named parameter in Ray 2.60 (pinned)
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        sources = items.flat_map(_expand, fn_kwargs=kwargs, max_retries=1, **CPU_STAGE)
        if READ_BLOCK_ROWS:  # an archive's stacks in small blocks: read in parallel, small blocks in flight
            sources = sources.repartition(target_num_rows_per_block=READ_BLOCK_ROWS)
        return sources.map(
            _load, fn_kwargs={**kwargs, "fov": fov, "grid": grid, "keep_unknown_fov": keep_unknown_fov},
            max_retries=1, **CPU_STAGE)


def _preprocess(batch: dict, n_slices: int, size: int, fov: float, keep_unknown_fov: bool = False) -> dict:
    from raypipe.scans.stack import ScanStack

    grid = {"n_slices": n_slices, "size": size, "fov": fov}  # the model's
    inputs, previews, status, error = [], [], list(batch["status"]), list(batch["error"])
    kind = list(batch["error_kind"])
    for k, images in enumerate(batch["images"]):
        x = np.zeros((n_slices, size, size), np.float32)
        preview = b""
        if status[k] == "ok":
            try:
                metadata = json.loads(batch["metadata"][k])
                heights = json.loads(batch["heights"][k])
                stack = ScanStack(np.asarray(images), None if heights is None else np.asarray(heights), metadata,
                                  scan_id=batch["scan_id"][k])
                x, preview = _model_input(stack, grid)
            except Exception as exc:
                status[k], error[k], kind[k] = "error", _reason(exc), _kind(exc)
        inputs.append(x)
        previews.append(preview)
    out = {k: v for k, v in batch.items() if k != "images"}
    if keep_unknown_fov:  # the raw images of stacks of unknown scale travel on, for the scale search
        unknown = [status[k] == "ok" and not json.loads(batch["metadata"][k]).get("fov") for k in range(len(status))]
        out["images"] = np.array([images if keep else _EMPTY for images, keep in zip(batch["images"], unknown)] + [None],
                                 dtype=object)[:-1]
    return {**out, "input": np.stack(inputs), "input_preview": np.array(previews, dtype=object),
            "status": np.array(status, dtype=object), "error": np.array(error, dtype=object),
            "error_kind": np.array(kind, dtype=object)}


class DepictionPredictor:
    """Inference actor: loads the model once, predicts depictions for the rows that are ok."""

    def __init__(self, model_path: str | None, threads: int, storage_options: StorageOptions = None,
                 keep_input: bool = False) -> None:
        """One model load per actor. Rows that carry raw ``images`` (a stack of unknown scale, with
        ``estimate_fov``) are read at several fields of view and the most confident reading is kept."""
        import torch

        from raypipe.model.inference import load_model

        torch.set_num_threads(max(1, threads))
        self.model = load_model(model_path, storage_options=storage_options)
        self.keep_input = keep_input

    def _estimate_scales(self, batch: dict) -> dict:
        from raypipe.scale import estimate_fov, with_fov
        from raypipe.scans.preprocess import preprocess
        from raypipe.scans.stack import ScanStack

        metadata, inputs, previews = list(batch["metadata"]), batch["input"].copy(), list(batch["input_preview"])
        for k, images in enumerate(batch["images"]):
            if batch["status"][k] != "ok" or images is None or np.asarray(images).size == 0:
                continue
            meta = json.loads(metadata[k])
            heights = json.loads(batch["heights"][k])
            stack = ScanStack(np.asarray(images), None if heights is None else np.asarray(heights), meta,
                              scan_id=batch["scan_id"][k])
            fov, tried = estimate_fov(stack, self.model)
            chosen = with_fov(stack, fov)
            inputs[k] = preprocess(chosen, n_slices=self.model.config.n_slices, window=self.model.config.window)
            previews[k] = input_preview(inputs[k])
            metadata[k] = json.dumps({**meta, "fov": chosen.metadata["fov"], "fov_source": "estimated",
                                      "fov_search": tried}, default=str)
        out = {key: v for key, v in batch.items() if key != "images"}
        return {**out, "input": inputs, "input_preview": np.array(previews, dtype=object),
                "metadata": np.array(metadata, dtype=object)}

    def __call__(self, batch: dict) -> dict:
        if "images" in batch:
            batch = self._estimate_scales(batch)
        ok = np.array([s == "ok" for s in batch["status"]])
        size = self.model.config.size
        depictions = np.zeros((len(ok), size, size, 3), np.uint8)
        # a model with the atom-centre output: its map travels on to the extraction stage
        centres = np.zeros((len(ok), size, size), np.float32) if self.model.has_centres else None
        margin_mean, margin_low = np.full(len(ok), 0.5), np.full(len(ok), 0.5)
        if ok.any():
            prediction = self.model.infer(batch["input"][ok])
            depictions[ok] = prediction.depictions
            for k, depiction, margin in zip(np.flatnonzero(ok), prediction.depictions, prediction.margins):
                margin_mean[k], margin_low[k] = margin_stats(margin, depiction)
            if centres is not None:
                centres[ok] = prediction.centres
        out = {k: v for k, v in batch.items() if k != "input" or self.keep_input}
        out = {**out, "depiction": depictions, "margin_mean": margin_mean, "margin_low": margin_low,
               "model": np.array([self.model.tag] * len(ok), dtype=object)}
        return out if centres is None else {**out, "centres": centres}



def _extract(batch: dict, size: int = 128, fov: float = 18.0, calibration: str | None = None) -> pa.Table:
    from raypipe.chem.depiction import encode_png
    from raypipe.chem.graph import extract_graph
    from raypipe.errors import DepictionError
    from raypipe.model.calibration import Calibration, features
    from raypipe.window import Window

    window = Window(size=size, fov=fov)
    calibrated = Calibration.from_json(calibration)

    rows = []
    for k in range(len(batch["status"])):
        metadata = json.loads(batch["metadata"][k])
        truth = metadata.get("truth") or {}
        row = {
            "scan_id": batch["scan_id"][k], "source": redact(batch["source"][k]), "format": batch["format"][k],
            "n_images": int(batch["n_images"][k]),
            "heights": json.loads(batch["heights"][k]),
            "amplitude": metadata.get("amplitude"), "stiffness": metadata.get("stiffness"),
            "mode": metadata.get("mode"), "fov": _fov(metadata),
            "fov_source": metadata.get("fov_source") or ("file" if _fov(metadata) else "unknown"),
            "input_preview": batch["input_preview"][k] or None,
            "depiction": None, "atoms": None, "bonds": None, "formula": None, "smiles": None, "confidence": None,
            "depiction_quality": None,
            "truth_formula": truth.get("formula"), "truth_smiles": truth.get("smiles"),
            "truth_depiction": _truth_depiction(truth, window),
            "candidates": json.loads(batch["candidates"][k]) if "candidates" in batch and batch["candidates"][k]
            else None,
            "model": batch["model"][k], "status": batch["status"][k], "error": batch["error"][k] or None,
            "error_kind": batch["error_kind"][k] or None, "unit": redact(batch["unit"][k]),
            "unit_fingerprint": batch["unit_fingerprint"][k],
        }
        if row["status"] == "ok":
            try:
                depiction = batch["depiction"][k]
                centres = batch["centres"][k] if "centres" in batch else None
                graph = extract_graph(depiction, window, centres)
                atoms, bonds = graph.to_rows()
                feats = features(graph, batch["margin_mean"][k], batch["margin_low"][k])
                row.update(depiction=encode_png(depiction), atoms=atoms, bonds=bonds, formula=graph.formula,
                           smiles=graph.smiles, depiction_quality=graph.confidence,
                           confidence=calibrated.predict(feats) if calibrated else None)
            except Exception as exc:
                row.update(status="error", error=_reason(exc), error_kind=_kind(exc))
                if isinstance(exc, DepictionError):  # the model drew something no graph can be read from: show it
                    row["depiction"] = encode_png(depiction)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA)


def _fov(metadata: dict) -> list[float] | None:
    fov = metadata.get("fov")
    if not fov:
        return None
    return [float(v) for v in (fov if isinstance(fov, (list, tuple)) else (fov, fov))]


def _truth_depiction(truth: dict, window) -> bytes | None:
    """The true molecule drawn on the model's window, from the atoms a simulated scan carries (drawn once
    per molecule and window in a worker: a simulated archive holds each molecule under several parameter
    sets, and drawing cost ~9 ms a stack)."""
    if not truth.get("atoms"):
        return None
    return _drawn_truth(json.dumps({"atoms": truth["atoms"], "bonds": truth.get("bonds", []),
                                    "smiles": truth.get("smiles") or ""}, sort_keys=True), window)


@functools.lru_cache(maxsize=512)
def _drawn_truth(truth_json: str, window) -> bytes | None:
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


def inference_pool(reserved: int = 0) -> tuple[dict, int, int]:
    """Ray resources per inference actor, the pool size and each actor's torch threads, from the
    cluster's resources: at least one CPU stays free for the read, preprocessing and extraction tasks
    (actors holding every CPU would starve them: a deadlock), beside ``reserved`` CPUs for other actor
    pools (candidate ranking). Torch threads: the actor's CPUs; on a cluster of 2 CPUs the one actor
    holds 1 and predicts on 2 threads, as the other stages leave their CPU idle part of the time
    (measured: 0.99x the bare loop against 0.94x with 1 thread, README "Performance settings").
    ``RAYPIPE_INFERENCE_THREADS`` overrides the threads."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1)) - reserved
    if gpus:
        return {"num_gpus": 1, "num_cpus": 1}, gpus, INFERENCE_THREADS or 1
    if cpus <= 2:
        return {"num_cpus": 1}, 1, INFERENCE_THREADS or max(1, cpus)
    threads = max(1, (cpus - 1) // 2)
    return {"num_cpus": threads}, max(1, (cpus - 1) // threads), INFERENCE_THREADS or threads


def predict_dataset(uri: str | ray.data.Dataset | list[dict], *, model: str | None = None, batch_size: int = 16,
                    fov=None, candidates: list[str] | str | None = None, rank_candidates_too: bool | None = None,
                    candidate_cache: str | None = None, estimate_fov: bool = False, limits=None,
                    storage_options: StorageOptions = None) -> ray.data.Dataset:
    """Label every stack under ``uri`` (a folder, file or ``s3://`` prefix; the rows of a ``read_scans``
    dataset; or scan units as ``read_units`` takes them) with ``model`` (a model file; default: the
    shipped model). Returns a lazy Dataset with the columns of ``OUTPUT_SCHEMA`` (documented in the
    README). Starts a local Ray when none is running.

    Stages: each stack is read and preprocessed in one CPU task (typed columns; only the model's input
    crosses the object store), inference runs in an actor pool, graph extraction in CPU tasks; a
    ``read_scans`` dataset (raw images) gets a separate preprocessing stage. The dataset's context gets
    an object-store budget of ``OBJECT_STORE_MB`` per inference actor (backpressure: flat memory).

    ``batch_size``: stacks per inference (and extraction) batch.
    ``fov``: every stack's field of view (Å) over what files and sidecars say. ``candidates``: SMILES (a
    list or a .smi/.json file) the scans may show: each row's ``candidates`` column then ranks them
    (:mod:`raypipe.candidates`); a sidecar's own ``candidates`` take precedence for its scan. Ranking runs
    when candidates are given (or ``rank_candidates_too``, for sidecar lists only); ``candidate_cache``: a
    folder keeping candidate simulations between runs. ``estimate_fov``: a stack whose field of view is
    unknown (no file, sidecar or ``fov`` says) is read at several assumed fields of view and the most
    confident reading kept (:mod:`raypipe.scale`; rows record ``fov_source = "estimated"``).
    """
    if rank_candidates_too is None:
        rank_candidates_too = bool(candidates)
    from raypipe.model.files import local_model_file, model_config, read_header
    from raypipe.pipelines.cluster import ensure_ray

    config = model_config(model, storage_options)  # the grid comes from the model (checked before Ray starts)
    calibration = read_header(local_model_file(model, storage_options)).get("calibration")
    if candidates is not None and not isinstance(candidates, list):
        from raypipe.candidates import read_candidates

        candidates = read_candidates(candidates)
    grid = {"n_slices": config.n_slices, "size": config.size, "fov": config.fov}
    ensure_ray()
    big = ray.cluster_resources().get("CPU", 1) >= 4
    resources, size, threads = inference_pool(reserved=1 if rank_candidates_too and big else 0)
    if isinstance(uri, ray.data.Dataset):  # raw rows of read_scans: preprocess them here
        scans = uri.map_batches(_preprocess, batch_size=batch_size,
                                fn_kwargs={**grid, "keep_unknown_fov": estimate_fov}, **CPU_STAGE)
    else:
        if isinstance(uri, str):
            from raypipe.scans.units import find_units

            found, _ = find_units(uri, storage_options)
            if not found:
                raise FileNotFoundError(f"{redact(uri)}: no scans (HDF5, NPZ, image or SXM folders) found")
            uri = [{"uri": u.uri, "kind": u.kind, "fingerprint": u.fingerprint, "key": u.key} for u in found]
        scans = read_units(uri, storage_options, limits, fov=fov, grid=grid, keep_unknown_fov=estimate_fov)
    rows = (
        scans.map_batches(DepictionPredictor, batch_size=batch_size, **resources,
                     # fixed size: a node lost mid-run can leave this pool holding every CPU left, and the
                     # label job then re-plans on the smaller cluster (its stall_timeout); measured, an
                     # autoscaling pool (min 1) did not shrink out of that state by itself
                     compute=ray.data.ActorPoolStrategy(size=size),
                     fn_constructor_kwargs={"model_path": model, "threads": threads,
                                            "storage_options": storage_options,
                                            "keep_input": rank_candidates_too})
    )
    if rank_candidates_too:
        rows = rows.map_batches(CandidateRanker, batch_size=batch_size, num_cpus=1 if big else 0.5,  # reserved above
                                compute=ray.data.ActorPoolStrategy(size=1),
                                fn_constructor_kwargs={"candidates": candidates or [], "size": config.size,
                                                       "fov": config.fov, "cache_folder": candidate_cache})
    rows = rows.map_batches(_extract, batch_size=batch_size,
                            fn_kwargs={"size": config.size, "fov": config.fov, "calibration": calibration},
                            **CPU_STAGE)
    if OBJECT_STORE_MB:  # backpressure: a bounded object-store budget for this dataset (and its reads)
        options = rows.context.execution_options
        options.resource_limits = options.resource_limits.copy(object_store_memory=OBJECT_STORE_MB * 2**20 * size)
    return rows


class CandidateRanker:
    """Ranks each ok row's candidates (the archive's list, or the scan's own from its sidecar): one
    :class:`raypipe.candidates.CandidateCache` per actor, so each candidate is prepared and simulated once."""

    def __init__(self, candidates: list[str], size: int, fov: float, cache_folder: str | None, top: int = 5) -> None:
        from raypipe.candidates import CandidateCache
        from raypipe.window import Window

        self.candidates, self.top = candidates, top
        self.cache = CandidateCache(Window(size=size, fov=fov), cache_folder)

    def __call__(self, batch: dict) -> dict:
        from raypipe.candidates import depiction_score, read_candidates, simulation_score

        ranked = []
        for k, status in enumerate(batch["status"]):
            rows = []
            own = json.loads(batch["metadata"][k]).get("candidates")
            names = (read_candidates(own) if own else None) or self.candidates
            if status == "ok" and names:
                for smiles in dict.fromkeys(names):
                    candidate = self.cache.get(smiles)
                    if candidate is None:
                        continue
                    dep = float(depiction_score(batch["depiction"][k], candidate))
                    sim = float(simulation_score(batch["input"][k], candidate, self.cache))
                    rows.append({"smiles": candidate.smiles, "score": 0.5 * (dep + sim), "depiction_score": dep,
                                 "simulation_score": sim})
                rows.sort(key=lambda r: -r["score"])
                for rank, row in enumerate(rows, start=1):
                    row["rank"] = rank
            ranked.append(json.dumps(rows[: self.top]) if rows else "")
        out = {k: v for k, v in batch.items() if k != "input"}
        return {**out, "candidates": np.array(ranked, dtype=object)}

