"""Batch labelling on Ray Data: :func:`read_scans` and :func:`predict_dataset`, which compose the stages of
:mod:`raypipe.pipelines.stages` into one streaming dataset.

Scans travel in blocks of at most ``READ_BLOCK_ROWS`` stacks after an archive is expanded (a streaming
repartition), so one archive is read by several tasks at once and no block in flight holds a whole
archive; inference runs in a pool of actors sized by :func:`inference_pool`; the dataset's object-store
budget is bounded per inference actor (backpressure: flat memory). Each setting and its measurement:
``docs/performance.md``.
"""

from __future__ import annotations

import os
import warnings

import ray

from raypipe.identify.defaults import SCREEN, SHORTLIST
from raypipe.pipelines.stages import Predictor, StageContext, expand, extract, identify, load, preprocess_batch
from raypipe.storage import StorageOptions, is_remote, redact

# CPU stages ask for half a CPU: they are light, two share a core, and a request unlike the inference
# actors' keeps Ray Data from fusing them into the actors (reads would then wait on inference)
CPU_STAGE = {"num_cpus": 0.5}
READ_BLOCK_ROWS = int(os.environ.get("RAYPIPE_READ_BLOCK_ROWS", "16"))  # stacks per block; 0: one per unit
OBJECT_STORE_MB = int(os.environ.get("RAYPIPE_OBJECT_STORE_MB", "200"))  # per inference actor; 0: Ray's
INFERENCE_THREADS = int(os.environ.get("RAYPIPE_INFERENCE_THREADS", "0"))  # per actor; 0: inference_pool's


def unit_rows(units, storage_options: StorageOptions = None) -> tuple[list[dict], int | None]:
    """Scan units (:class:`raypipe.scans.units.ScanUnit`) as the pipeline's input rows, and how many stacks
    they hold (None when a remote archive's count is unknown before it is read). A local archive's index is
    read here, once: its stack sources travel with its row (a corrupt one becomes its error row later)."""
    from raypipe.scans.units import unit_sources

    from raypipe.pipelines.stages import reason

    rows, counts = [], []
    for unit in units:
        row = {"uri": unit.uri, "kind": unit.kind, "fingerprint": unit.fingerprint, "sidecar": unit.sidecar,
               "sources": None, "error": None}
        if not unit.multi:
            counts.append(1)
        elif is_remote(unit.uri):
            counts.append(None)  # listed by its task
        else:
            try:
                row["sources"] = unit_sources(unit, storage_options)
                counts.append(len(row["sources"]))
            except Exception as exc:  # noqa: BLE001 - the unit's error row says why
                row["error"] = reason(exc)
                counts.append(1)
        rows.append(row)
    return rows, None if None in counts else sum(counts)


def _unlisted_archive(unit: dict) -> bool:
    """A many-stack file whose stacks are not listed yet (a remote archive: its task lists them)."""
    from raypipe.scans.units import ScanUnit

    return unit.get("sources") is None and ScanUnit(unit["uri"], unit["kind"], unit["fingerprint"]).multi


def find_unit_rows(uri: str, storage_options: StorageOptions = None) -> tuple[list[dict], int | None]:
    """:func:`unit_rows` of every scan unit under ``uri``; FileNotFoundError when there is none."""
    from raypipe.scans.units import find_units

    units, _ = find_units(uri, storage_options)
    if not units:
        raise FileNotFoundError(f"{redact(uri)}: no scans (HDF5, NPZ, image or SXM folders) found")
    return unit_rows(units, storage_options)


def _read(units: list[dict], ctx: StageContext, prepare: bool) -> ray.data.Dataset:
    """Units -> one row per stack, read (and, with ``prepare``, preprocessed) in tasks. Ray retries a failed
    read task at most once (out-of-memory kills included, where the cluster was started by raypipe)."""
    items = ray.data.from_items(units, override_num_blocks=max(1, min(len(units), 200)))
    with warnings.catch_warnings():  # max_retries has no named parameter in Ray 2.60 (pinned)
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        sources = items.flat_map(expand, fn_kwargs={"ctx": ctx}, max_retries=1, **CPU_STAGE)
        if READ_BLOCK_ROWS:  # an archive's stacks in small blocks: read in parallel, small blocks in flight
            sources = sources.repartition(target_num_rows_per_block=READ_BLOCK_ROWS)
        return sources.map(load, fn_kwargs={"ctx": ctx, "prepare": prepare}, max_retries=1, **CPU_STAGE)


def read_scans(uri: str, *, storage_options: StorageOptions = None, fov=None) -> ray.data.Dataset:
    """One row per stack under ``uri`` (local folder/file or ``s3://`` prefix), in any supported format:
    ``unit``, ``unit_fingerprint``, ``source``, ``scan_id``, ``format``, ``n_images``, ``heights``, ``fov``,
    ``fov_source``, ``amplitude``, ``stiffness``, ``mode``, the truth of a simulated scan, ``images`` (n, H, W)
    float32, ``status``, ``error``, ``error_kind``. Starts a local Ray when none is running."""
    from raypipe.pipelines.cluster import ensure_ray
    from raypipe.window import DEFAULT_WINDOW

    units, _ = find_unit_rows(uri, storage_options)
    ensure_ray()
    return _read(units, StageContext(DEFAULT_WINDOW, 10, storage_options, fov=fov), prepare=False)


def inference_pool() -> tuple[dict, int, int]:
    """Ray resources per inference actor, the pool size and each actor's torch threads, from the cluster's
    resources: at least one CPU stays free for the read, ranking, extraction and write tasks (actors holding
    every CPU would starve them: a deadlock). On a cluster of 2 CPUs the one actor holds 1 and predicts on 2
    threads, as the other stages leave their CPU idle part of the time. ``RAYPIPE_INFERENCE_THREADS``
    overrides the threads."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    if gpus:
        return {"num_gpus": 1, "num_cpus": 1}, gpus, INFERENCE_THREADS or 1
    if cpus <= 2:
        return {"num_cpus": 1}, 1, INFERENCE_THREADS or max(1, cpus)
    threads = max(1, (cpus - 1) // 2)
    return {"num_cpus": threads}, max(1, (cpus - 1) // threads), INFERENCE_THREADS or threads


def predict_dataset(uri: str | ray.data.Dataset | list[dict], *, model=None, batch_size: int = 16, fov=None,
                    candidates: list[str] | str | None = None, candidate_cache: str | None = None,
                    library=None, shortlist: int = SHORTLIST, screen: int = SCREEN, estimate_fov: bool = False,
                    limits=None, storage_options: StorageOptions = None) -> ray.data.Dataset:
    """Label every stack under ``uri`` with ``model`` (a model file: a path, ``s3://`` or an opened
    :class:`~raypipe.model.files.ModelFile`; default: the shipped model). Returns a lazy Dataset with the columns of ``OUTPUT_SCHEMA`` (README "Output columns"). Starts a
    local Ray when none is running.

    ``uri``: a folder, file or ``s3://`` prefix; a :func:`read_scans` dataset; or :func:`unit_rows`.
    ``batch_size``: stacks per inference (and extraction) batch. ``fov``: every stack's field of view (Å)
    over what files and sidecars say. ``candidates``: SMILES (a list, or a .smi/.json file) the scans may
    show: each row's ``candidates`` column ranks them (a sidecar's own ``candidates`` take precedence for its
    scan); ``candidate_cache``: a folder keeping candidate simulations between runs. ``library``: a library of
    known molecules (its URI, or a :class:`raypipe.identify.library.Library`): each row's ``identified``
    column holds its best matches (:mod:`raypipe.identify.search`: the filter's best ``screen`` are screened
    by their depictions down to ``shortlist``, which get the simulation match); the library is read once and
    shared by the workers. ``estimate_fov``: a
    stack of unknown field of view is read at several assumed ones and the most confident reading kept
    (rows record ``fov_source = "estimated"``).

    Examples:
        >>> import raypipe
        >>> from raypipe.resources import SAMPLE_SCANS
        >>> rows = raypipe.predict_dataset(str(SAMPLE_SCANS)).take_all()  # doctest: +SKIP
    """
    from raypipe.model.files import ModelFile
    from raypipe.pipelines.cluster import ensure_ray

    file = model if isinstance(model, ModelFile) else ModelFile.open(model, storage_options)  # once, before Ray
    config = file.config
    names = None
    if candidates is not None and not isinstance(candidates, list):
        from raypipe.identify.candidates import read_candidate_names

        candidates, names = read_candidate_names(candidates)
    if library is not None and not hasattr(library, "fingerprints"):
        from raypipe.identify.library import Library

        library = Library.open(str(library), storage_options, window=config.window)  # refused before Ray starts
    if isinstance(uri, str):
        uri, _ = find_unit_rows(uri, storage_options)
    ensure_ray()
    ctx = StageContext(config.window, config.n_slices, storage_options, limits, fov, estimate_fov, file,
                       tuple(candidates or ()), tuple(names or candidates or ()), candidate_cache,
                       ray.put(library) if library is not None else None, shortlist, screen=screen)
    resources, pool, threads = inference_pool()
    if isinstance(uri, list) and not any(_unlisted_archive(u) for u in uri):
        # no more actors than blocks of work: a small run starts one, not the whole pool
        stacks = sum(len(u["sources"]) if u.get("sources") else 1 for u in uri)
        pool = max(1, min(pool, -(-stacks // max(READ_BLOCK_ROWS, 1))))
    if isinstance(uri, ray.data.Dataset):  # raw rows of read_scans: preprocess them here
        scans, ranking = uri.map_batches(preprocess_batch, batch_size=batch_size, fn_kwargs={"ctx": ctx},
                                         **CPU_STAGE), bool(candidates) or library is not None
    else:
        scans = _read(uri, ctx, prepare=True)
        ranking = bool(candidates) or library is not None or any(u.get("sidecar") for u in uri)
    rows = scans.map_batches(
        Predictor, batch_size=batch_size, **resources,
        # fixed size: a node lost mid-run can leave this pool holding every CPU left, and the label job then
        # re-plans on the smaller cluster (its stall_timeout); an autoscaling pool did not shrink out of that
        compute=ray.data.ActorPoolStrategy(size=pool),
        fn_constructor_kwargs={"ctx": ctx, "threads": threads, "keep_input": ranking})
    if ranking:
        # one scan a task: a scan's candidates take seconds each, and blocks must keep moving (the stall timeout)
        rows = rows.map_batches(identify, batch_size=1, fn_kwargs={"ctx": ctx}, **CPU_STAGE)
    rows = rows.map_batches(extract, batch_size=batch_size, fn_kwargs={"ctx": ctx}, **CPU_STAGE)
    if OBJECT_STORE_MB:  # backpressure: a bounded object-store budget for this dataset (and its reads)
        options = rows.context.execution_options
        options.resource_limits = options.resource_limits.copy(object_store_memory=OBJECT_STORE_MB * 2**20 * pool)
    return rows
