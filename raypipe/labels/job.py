"""``label_archive``: the nightly job. Labels what is new or changed into the labels table, in one commit.

A run (see :mod:`raypipe.labels.table` for the table, its catalog and its guarantees):

1. take the table's **writer lease** (:mod:`raypipe.labels.lease`; a second job waits for it, bounded by
   ``lease_wait``, or gives up with a one-line message);
2. read the table's current snapshot and, from it, which units are done (unit URI -> fingerprint);
3. list the scan units under the input and sort them (:func:`raypipe.labels.plan.plan_run`): new, changed
   or to redo, unchanged (skipped) and still arriving (left for the next run);
4. label the units to do with :func:`raypipe.predict_dataset`; Ray Data writes the rows' data files and
   the driver commits them in **one Iceberg transaction** (:class:`raypipe.labels.sink.LabelsSink`) that
   also deletes the earlier rows of every unit it replaces — only if the table is still at the snapshot
   read in 2 and the lease is still held;
5. remove data files that no snapshot references and are older than an hour (killed runs), release the
   lease, and write the run's gallery page where one is wanted.

Nothing becomes visible before the commit, so a kill anywhere leaves the table as it was; a re-run
finds the same work to do. A unit whose read failed with a ``ScanError`` is recorded as failed
(permanent) with its fingerprint and is not retried until it changes (or ``retry_errors``).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import pyarrow as pa

from raypipe.identify.defaults import SCREEN, SHORTLIST
from raypipe.labels.plan import RELABEL, RunPlan, plan_run
from raypipe.labels.table import (DEFAULT_TABLE, TableError, TableSettings, done_units, now_utc, open_table,
                                   remove_orphans)
from raypipe.storage import StorageOptions, is_remote, redact

__all__ = ["LabelSettings", "LabelSummary", "label_archive", "parse_run_date"]


@dataclass(frozen=True)
class LabelSettings:
    """Everything one labelling run is told, checked once (:meth:`checked`) and passed whole; the command
    line's options and their defaults are these fields."""

    input_uri: str  # folder, file or s3:// prefix of scans
    output_uri: str  # where the labels table's data lives (folder or s3://)
    model: str | None = None  # model file, a path or s3:// URI; None: the shipped model
    run_date: str | None = None  # YYYY-MM-DD; None: today
    catalog: str | None = None  # Iceberg catalog URL; None: RAYPIPE_CATALOG, else sqlite <out>/catalog.db
    table: str = DEFAULT_TABLE
    storage_options: StorageOptions = None
    settle: float = 60.0  # seconds a unit's newest file must be old before it is labelled (still arriving)
    relabel: str | None = None  # None, "all", or "stale" (labelled by another model than this run's)
    retry_errors: bool = False  # relabel units whose rows failed before
    lease_wait: float = 900.0  # seconds to wait for another job writing the same table
    lease_ttl: float = 120.0  # seconds a lease lives without a heartbeat
    maintain: bool = False  # after the commit, maintain the table under the same lease (raypipe.labels.maintain)
    stall_timeout: float = 600.0  # seconds without progress before the run is planned once more (a node lost)
    batch_size: int = 16  # stacks per inference batch
    limits: object = None  # raypipe.scans.limits.ReadLimits; None: from the environment
    fov: tuple[float, ...] | None = None  # every stack's field of view (Å), over files and sidecars
    estimate_fov: bool = False  # stacks of unknown scale: search their field of view (8x their inference)
    candidates: str | None = None  # a .smi file of the molecules the scans may show
    library: str | None = None  # a library of known molecules (raypipe library build): rows get ``identified``
    shortlist: int = SHORTLIST  # library molecules the first stage keeps for the simulation match
    screen: int = SCREEN  # the filter's best screened by their depictions down to the shortlist
    candidate_cache: str | None = None  # folder keeping candidate simulations; None: <out>-candidates (local)
    gallery: str | None = None  # folder of HTML pages; None: <out>-gallery beside a local out; "": none

    def checked(self) -> "LabelSettings":
        """The settings with the run date, relabel mode, field of view and files checked (one-line errors),
        and the defaults that depend on the output filled in."""
        run_date = parse_run_date(self.run_date)
        if self.relabel not in RELABEL:
            raise ValueError(f"relabel must be one of {RELABEL}, not {self.relabel!r}")
        fov = self.fov
        if fov is not None:
            from raypipe.scans.sidecar import parse_fov

            fov = tuple(parse_fov(list(fov) if isinstance(fov, (list, tuple)) else [fov], "fov"))
        if self.candidates is not None and not Path(self.candidates).is_file():
            raise FileNotFoundError(f"{self.candidates}: no such candidates file")
        local = not is_remote(self.output_uri)
        out = Path(self.output_uri.rstrip("/"))
        if local and out.is_file():
            raise FileExistsError(f"{out}: the output is a file; --out names a folder (created if absent)")
        cache = self.candidate_cache or (str(out) + "-candidates" if local else None)
        gallery = self.gallery if self.gallery is not None else (str(out.parent / f"{out.name}-gallery") if local else "")
        return replace(self, run_date=run_date, fov=fov, candidate_cache=cache, gallery=gallery)


@dataclass
class LabelSummary:
    input_uri: str
    output_uri: str
    run_id: str
    run_date: str
    units_found: int
    units_new: int
    ignored_files: int
    ok: int
    errors: int
    seconds: float
    units_replaced: int = 0
    units_unchanged: int = 0
    units_arriving: int = 0
    arriving: list[str] = field(default_factory=list)
    error_reasons: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> the first few units
    snapshot_id: int | None = None
    table: str = DEFAULT_TABLE
    gallery: str | None = None  # the run's first gallery page, where one was written

    @property
    def stacks_per_second(self) -> float:
        return (self.ok + self.errors) / self.seconds if self.seconds else 0.0

    def report(self) -> str:
        """The run for a person (and a cron log): a few lines, error reasons with their first files."""
        lines = []
        if not self.units_found:
            lines.append(f"label: no scans under {redact(self.input_uri)} ({self.ignored_files} other files "
                         "ignored): nothing to label")
        elif self.ok + self.errors:
            lines.append(f"label: {self.ok + self.errors} stacks labelled in {self.seconds:.1f} s "
                         f"({self.stacks_per_second:.1f}/s): {self.ok} ok, {self.errors} errors; run {self.run_id}, "
                         f"table {self.table} snapshot {self.snapshot_id}")
        else:
            lines.append(f"label: nothing new to label ({self.units_unchanged} units unchanged"
                         + (f", {self.units_arriving} still arriving: newer than --settle)" if self.units_arriving
                            else ")"))
        for reason, n in self.error_reasons.items():
            files = ", ".join(redact(u) for u in self.error_examples.get(reason, []))
            lines.append(f"  {n} x {reason}" + (f"  e.g. {files}" if files else ""))
        if self.arriving:
            lines.append("  still arriving (files newer than --settle, labelled by a later run): "
                         + ", ".join(redact(a) for a in self.arriving[:5]) + (" ..." if len(self.arriving) > 5 else ""))
        if self.gallery:
            lines.append(f"  gallery: {self.gallery} (all runs: {Path(self.gallery).parent / 'index.html'})")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {**asdict(self), "input_uri": redact(self.input_uri), "output_uri": redact(self.output_uri),
                "arriving": [redact(a) for a in self.arriving[:20]],
                "stacks_per_second": round(self.stacks_per_second, 3)}


def parse_run_date(text: str | None) -> str:
    """``YYYY-MM-DD`` (default: today); anything else is refused.

    Examples:
        >>> parse_run_date("2026-12-04")
        '2026-12-04'
    """
    if text is None:
        return dt.date.today().isoformat()
    try:
        return dt.date.fromisoformat(text).isoformat()
    except (TypeError, ValueError):
        raise ValueError(f"run date {text!r} is not a date (YYYY-MM-DD)") from None


def label_archive(uri: str, output_uri: str, *, progress=print, show_progress: bool = False,
                  **options) -> LabelSummary:
    """Label the new and changed scans under ``uri`` into the labels table at ``output_uri`` (module docs).
    ``options``: the other fields of :class:`LabelSettings` (``model``, ``run_date``, ``settle``...).

    Raises FileNotFoundError for a missing input, ``ValueError`` for a bad setting,
    :class:`raypipe.labels.table.TableError` when the table cannot be used (catalog, busy lease, a
    conflicting commit). Bad scans never raise: they become error rows. ``progress`` receives raypipe's
    one-line messages; ``show_progress`` adds a progress bar (terminal) or periodic "N of M" lines. Ray is
    started (or joined) only when there is something to label. The run's gallery page is written beside a
    local output (``gallery``; "" for none).
    """
    return run(LabelSettings(uri, output_uri, **options), progress=progress, show_progress=show_progress)


def run(settings: LabelSettings, *, progress=print, show_progress: bool = False) -> LabelSummary:
    """:func:`label_archive` with its settings built. A full disk (of the output, its catalog or a worker's)
    ends the run with one line naming the output; nothing is committed, the next run after space is freed
    labels everything once."""
    try:
        return _run(settings, progress=progress, show_progress=show_progress)
    except Exception as exc:
        if _disk_full(exc):
            raise TableError(f"{redact(settings.output_uri)}: no space left on the device while this run wrote its "
                             "rows or its catalog; nothing committed (the table stays as it was): free space and run "
                             "again") from exc
        raise


def _run(settings: LabelSettings, *, progress, show_progress: bool) -> LabelSummary:
    from raypipe.labels.lease import WriterLease
    from raypipe.model.files import ModelFile
    from raypipe.pipelines.schema import OUTPUT_SCHEMA
    from raypipe.scans.units import find_units
    from raypipe.storage import check_reachable

    start = time.perf_counter()
    s = settings.checked()
    table = TableSettings(s.output_uri, catalog=s.catalog, table=s.table, storage_options=s.storage_options)
    s = replace(s, storage_options=table.storage_options)
    for uri in (s.input_uri, s.output_uri):  # one line, before Ray starts, where object storage cannot be used
        check_reachable(uri, s.storage_options)
    model = ModelFile.open(s.model, s.storage_options)  # read and hashed once for the whole job
    library = None
    if s.library:  # read once for the whole job, and refused in one line before anything starts
        from raypipe.identify.library import Library

        library = Library.open(s.library, s.storage_options, window=model.config.window)
    units, ignored = find_units(s.input_uri, s.storage_options)
    if not units:  # nothing to plan: no table, no lease, no Ray
        return LabelSummary(s.input_uri, s.output_uri, "", s.run_date, 0, 0, ignored, 0, 0,
                            time.perf_counter() - start, table=table.table)
    tbl = open_table(table, table_schema(OUTPUT_SCHEMA), create=True)
    lease = WriterLease(table.lease_url(), f"{table.table}@{table.location}", ttl=s.lease_ttl)
    lease.acquire(s.lease_wait, progress=progress)
    try:
        tbl.refresh()
        planned = tbl.metadata.current_snapshot_id
        plan = plan_run(units, done_units(tbl, planned), settle=s.settle, relabel=s.relabel,
                        retry_errors=s.retry_errors, model=model.tag)
        run_id = f"{s.run_date}-{time.strftime('%H%M%S')}-{lease.holder.rsplit(':', 1)[-1]}"
        progress(f"label: {len(units)} scan units under {redact(s.input_uri)} ({ignored} other files ignored): "
                 f"{len(plan.new)} new, {len(plan.replace)} changed or to redo, {plan.unchanged} unchanged, "
                 f"{len(plan.arriving)} still arriving (newer than --settle {s.settle:g} s); table {table.describe()}")
        summary = LabelSummary(s.input_uri, s.output_uri, run_id, s.run_date, len(units), len(plan.new), ignored, 0, 0,
                               0.0, units_replaced=len(plan.replace), units_unchanged=plan.unchanged,
                               units_arriving=len(plan.arriving), arriving=[u.uri for u in plan.arriving],
                               snapshot_id=planned, table=table.table)
        if plan.todo:
            _run_pipeline(s, table, model, library, plan, summary, planned, lease, show_progress, progress)
            tbl.refresh()
            summary.snapshot_id = tbl.metadata.current_snapshot_id
            removed = remove_orphans(tbl, table)
            if removed:
                progress(f"label: removed {removed} unreferenced data files of killed runs")
        if s.maintain:
            from raypipe.labels.maintain import maintain_table

            progress(maintain_table(s.output_uri, s.storage_options, catalog=s.catalog, table=s.table, lease=lease,
                                    progress=progress).report())
    finally:
        lease.release()
    if s.gallery and summary.ok + summary.errors:
        summary.gallery = str(_gallery(s, table, model, summary))
    summary.seconds = time.perf_counter() - start
    return summary


def table_schema(output_schema: pa.Schema) -> pa.Schema:
    """The labels table's schema: the output rows' columns and the run's."""
    def doc(name, kind, text):
        return pa.field(name, kind, metadata={b"doc": text.encode()})

    return pa.schema(list(output_schema) + [
        doc("run_id", pa.string(), "the labelling run that wrote the row"),
        doc("run_date", pa.string(), "that run's date (YYYY-MM-DD)"),
        doc("labelled_at", pa.timestamp("us", tz="UTC"), "when that run labelled it (UTC)")])


def _run_pipeline(s: LabelSettings, table: TableSettings, model, library, plan: RunPlan, summary: LabelSummary, planned,
           lease, show_progress: bool, progress) -> None:
    import ray
    from ray.data import DataContext
    from ray.data.exceptions import ExecutionTimeoutError

    from raypipe.labels.sink import LabelsSink
    from raypipe.pipelines.cluster import ensure_ray
    from raypipe.pipelines.predict import predict_dataset, unit_rows
    from raypipe.pipelines.schema import OUTPUT_SCHEMA
    from raypipe.progress import Progress, count
    from raypipe.version import __version__

    units, expected = unit_rows(plan.todo, s.storage_options)  # each archive's index read once
    ensure_ray()
    # A stalled run (no block moving anywhere for stall_timeout s: e.g. a node lost mid-run while the
    # inference pool, sized for the cluster as it was, holds every CPU left) fails instead of hanging, and is
    # planned once more on the cluster as it is now; nothing is committed before the sink's single commit.
    DataContext.get_current().execution_no_progress_timeout_s = s.stall_timeout
    schema = table_schema(OUTPUT_SCHEMA)
    labelled_at = now_utc()

    def add_run_columns(batch: pa.Table, counter=None) -> pa.Table:
        n = batch.num_rows
        count(counter, n)
        batch = batch.append_column("run_id", pa.array([summary.run_id] * n, pa.string()))
        batch = batch.append_column("run_date", pa.array([summary.run_date] * n, pa.string()))
        batch = batch.append_column("labelled_at", pa.array([labelled_at] * n, pa.timestamp("us", tz="UTC")))
        return batch.select(schema.names).cast(schema)

    for attempt in (1, 2):
        rows = predict_dataset(units, model=model, batch_size=s.batch_size, storage_options=s.storage_options,
                               fov=s.fov, limits=s.limits, candidates=s.candidates, candidate_cache=s.candidate_cache,
                               library=library, shortlist=s.shortlist, screen=s.screen, estimate_fov=s.estimate_fov)
        sink = LabelsSink(table, planned_snapshot=planned, replace_units=[redact(u.uri) for u in plan.replace],
                          lease=lease, snapshot_properties={
                              "raypipe.run-id": summary.run_id, "raypipe.version": __version__,
                              "raypipe.model": model.tag, "raypipe.input": redact(summary.input_uri),
                              "raypipe.units-new": str(len(plan.new)), "raypipe.units-replaced": str(len(plan.replace))})
        try:
            with Progress(expected, what="stacks", label="label", enabled=show_progress) as bar:
                rows.map_batches(add_run_columns, batch_format="pyarrow", batch_size=None, num_cpus=0.5,
                                 fn_kwargs={"counter": bar.counter}).write_datasink(sink)
            break
        except ExecutionTimeoutError:
            if attempt == 2:
                raise
            nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
            progress(f"label: no progress for {s.stall_timeout:.0f} s (--stall-timeout; {nodes} nodes alive, "
                     f"{int(ray.cluster_resources().get('CPU', 0))} CPUs); labelling the same units again on the "
                     "cluster as it is now")
    mine = open_table(table).scan(row_filter=f"run_id == '{summary.run_id}'",
                                  selected_fields=("status", "error", "unit")).to_arrow()
    status = mine["status"].to_pylist()
    summary.ok = status.count("ok")
    summary.errors = len(status) - summary.ok
    failed = [(_short(e), u) for st, e, u in zip(status, mine["error"].to_pylist(), mine["unit"].to_pylist())
              if st != "ok"]
    summary.error_reasons = dict(Counter(reason for reason, _ in failed).most_common(10))
    for reason, unit in failed:
        if reason in summary.error_reasons and len(summary.error_examples.setdefault(reason, [])) < 3:
            summary.error_examples[reason].append(unit)


def _gallery(s: LabelSettings, table: TableSettings, model, summary: LabelSummary) -> Path:
    from raypipe.labels.table import read_labels
    from raypipe.reports.gallery import run_gallery

    rows = read_labels(s.output_uri, s.storage_options, catalog=s.catalog, table=s.table,
                       row_filter=f"run_id == '{summary.run_id}'").to_pylist()
    return run_gallery(rows, s.gallery, summary.run_id, window=model.config.window)


def _disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` or what caused it (through Ray's task errors) is a full disk or quota.

    Examples:
        >>> import errno
        >>> _disk_full(RuntimeError("write failed")), _disk_full(OSError(errno.ENOSPC, "No space left on device"))
        (False, True)
    """
    import errno

    from raypipe.errors import causes

    texts = ("No space left on device", "database or disk is full", "Disk quota exceeded")
    return any((isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or any(t in str(e) for t in texts)
               for e in causes(exc))


def _short(error: str | None) -> str:
    """An error's reason without the file (for grouping): the text after the last ': '."""
    text = error or "unknown"
    return text.rsplit(": ", 1)[-1][:120]


def settings_fields() -> dict[str, object]:
    """Each :class:`LabelSettings` field's default (what the command line shows)."""
    return {f.name: f.default for f in fields(LabelSettings)}
