"""``label_archive``: the nightly job. Labels what is new or changed into the labels table, in one commit.

A run (see :mod:`raypipe.pipelines.table` for the table, its catalog and its guarantees):

1. take the table's **writer lease** (a second job waits for it, bounded by ``lease_wait``, or gives up
   with a one-line message);
2. read the table's current snapshot and, from it, which units are done (unit URI -> fingerprint);
3. list the scan units under the input and sort them: **new** (never labelled), **changed** (another
   fingerprint: a file was added, replaced or completed), **retry** (a row of it failed for a reason
   that may pass: I/O, a time limit, a crash; or any error with ``retry_errors``), **relabel** (``relabel=
   "all"``, or ``"stale"``: labelled by another model than this run's), **unchanged** (skipped) and
   **arriving** (its newest file is younger than ``settle`` seconds: left for the next run);
4. label new + changed + retry + relabel units with :func:`predict_dataset`; Ray Data writes the rows'
   data files and the driver commits them in **one Iceberg transaction** that also deletes the earlier
   rows of every unit it replaces — only if the table is still at the snapshot read in 2 and the lease
   is still held;
5. remove data files that no snapshot references and are older than an hour (killed runs), release
   the lease.

Nothing becomes visible before the commit, so a kill anywhere leaves the table as it was; a re-run
finds the same work to do. A unit whose read failed with a ``ScanError`` is recorded as failed
(permanent) with its fingerprint and is not retried until it changes (or ``retry_errors``).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from raypipe.pipelines.table import (
    DEFAULT_TABLE,
    RunPlan,
    TableSettings,
    WriterLease,
    done_units,
    now_utc,
    open_table,
    read_labels,
    remove_orphans,
)
from raypipe.scans.units import find_units
from raypipe.storage import StorageOptions, redact

STALL_TIMEOUT = 600.0  # s without any block moving before a run is planned again (see _label)

__all__ = ["LabelSummary", "label_archive", "read_labels", "parse_run_date"]
RELABEL = (None, "all", "stale")


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
                         + (f", {self.units_arriving} still arriving)" if self.units_arriving else ")"))
        for reason, n in self.error_reasons.items():
            files = ", ".join(redact(u) for u in self.error_examples.get(reason, []))
            lines.append(f"  {n} x {reason}" + (f"  e.g. {files}" if files else ""))
        if self.arriving:
            lines.append("  still arriving: " + ", ".join(redact(a) for a in self.arriving[:5])
                         + (" ..." if len(self.arriving) > 5 else ""))
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {**asdict(self), "input_uri": redact(self.input_uri), "output_uri": redact(self.output_uri),
                "arriving": [redact(a) for a in self.arriving[:20]],
                "stacks_per_second": round(self.stacks_per_second, 3)}


def parse_run_date(text: str | None) -> str:
    """``YYYY-MM-DD`` (default: today); anything else is refused."""
    if text is None:
        return dt.date.today().isoformat()
    try:
        return dt.date.fromisoformat(text).isoformat()
    except (TypeError, ValueError):
        raise ValueError(f"run date {text!r} is not a date (YYYY-MM-DD)") from None


def _model_tag(model: str | None, storage_options: StorageOptions = None) -> str:
    from raypipe.model.files import model_tag

    return model_tag(model, storage_options)


def plan_run(units, done: dict[str, dict], *, settle: float, relabel: str | None, retry_errors: bool,
             model: str, now: float | None = None) -> RunPlan:
    now = time.time() if now is None else now
    plan = RunPlan()
    for unit in units:
        if settle and now - unit.newest < settle:
            plan.arriving.append(unit)
            continue
        entry = done.get(redact(unit.uri))
        if entry is None:
            plan.new.append(unit)
        elif (entry["fingerprint"] != unit.fingerprint or entry["transient"] or (retry_errors and entry["errors"])
              or relabel == "all" or (relabel == "stale" and entry["models"] != {model})):
            plan.replace.append(unit)
        else:
            plan.unchanged += 1
    return plan


def label_archive(uri: str, output_uri: str, *, model: str | None = None, run_date: str | None = None,
                  batch_size: int = 16, storage_options: StorageOptions = None, catalog: str | None = None,
                  table: str = DEFAULT_TABLE, settle: float = 60.0, relabel: str | None = None,
                  retry_errors: bool = False, lease_wait: float = 900.0, lease_ttl: float = 120.0,
                  limits=None, progress=print, show_progress: bool = False, fov=None, candidates=None,
                  candidate_cache: str | None = None, estimate_fov: bool = False,
                  stall_timeout: float = STALL_TIMEOUT) -> LabelSummary:
    """Label the new and changed scans under ``uri`` into the labels table at ``output_uri`` (module docs).

    Raises FileNotFoundError for a missing input, ``ValueError`` for a bad ``run_date`` or ``relabel``,
    :class:`raypipe.pipelines.table.TableError` when the table cannot be used (catalog, busy lease, a
    conflicting commit). Bad scans never raise: they become error rows. ``progress`` receives raypipe's
    one-line messages; ``show_progress`` adds a progress bar (terminal) or periodic "N of M" lines;
    ``fov`` (Å) overrides every stack's field of view (rows record ``fov_source = user``; a unit already
    labelled is relabelled only with ``relabel``). ``stall_timeout``: seconds without any block moving
    before the run is planned once more on the cluster as it is then (a node lost mid-run); the second
    stall raises ``ray.data.exceptions.ExecutionTimeoutError`` (nothing committed, retried next run).
    Ray is started (or joined) only when there is something to label.
    """
    start = time.perf_counter()
    run_date = parse_run_date(run_date)
    if relabel not in RELABEL:
        raise ValueError(f"relabel must be one of {RELABEL}, not {relabel!r}")
    settings = TableSettings(output_uri, catalog=catalog, table=table, storage_options=storage_options)
    storage_options = settings.storage_options
    from raypipe.pipelines.predict import OUTPUT_SCHEMA

    tag = _model_tag(model, storage_options)
    units, ignored = find_units(uri, storage_options)
    if not units:  # nothing to plan: no table, no lease, no Ray
        return LabelSummary(uri, output_uri, "", run_date, 0, 0, ignored, 0, 0, time.perf_counter() - start,
                            table=settings.table)
    tbl = open_table(settings, _table_schema(OUTPUT_SCHEMA), create=True)
    lease = WriterLease(settings.lease_url(), f"{settings.table}@{settings.location}", ttl=lease_ttl)
    lease.acquire(lease_wait, progress=progress)
    try:
        tbl.refresh()
        planned = tbl.metadata.current_snapshot_id
        plan = plan_run(units, done_units(tbl, planned), settle=settle, relabel=relabel, retry_errors=retry_errors,
                        model=tag)
        todo = plan.new + plan.replace
        run_id = f"{run_date}-{time.strftime('%H%M%S')}-{lease.holder.rsplit(':', 1)[-1]}"
        progress(f"label: {len(units)} scan units under {redact(uri)} ({ignored} other files ignored): "
                 f"{len(plan.new)} new, {len(plan.replace)} changed or to redo, {plan.unchanged} unchanged, "
                 f"{len(plan.arriving)} still arriving; table {settings.describe()}")
        summary = LabelSummary(uri, output_uri, run_id, run_date, len(units), len(plan.new), ignored, 0, 0, 0.0,
                               units_replaced=len(plan.replace), units_unchanged=plan.unchanged,
                               units_arriving=len(plan.arriving), arriving=[u.uri for u in plan.arriving],
                               snapshot_id=planned, table=settings.table)
        if todo:
            _label(todo, plan, settings, summary, model, tag, batch_size, planned, lease, limits, show_progress, fov,
                   candidates, candidate_cache, any(_has_candidates(u) for u in todo), estimate_fov,
                   stall_timeout=stall_timeout, progress=progress)
            tbl.refresh()
            summary.snapshot_id = tbl.metadata.current_snapshot_id
            removed = remove_orphans(tbl, settings)
            if removed:
                progress(f"label: removed {removed} unreferenced data files of killed runs")
    finally:
        lease.release()
    summary.seconds = time.perf_counter() - start
    return summary


def _table_schema(output_schema: pa.Schema) -> pa.Schema:
    def doc(name, kind, text):
        return pa.field(name, kind, metadata={b"doc": text.encode()})

    return pa.schema(list(output_schema) + [
        doc("run_id", pa.string(), "the labelling run that wrote the row"),
        doc("run_date", pa.string(), "that run's date (YYYY-MM-DD)"),
        doc("labelled_at", pa.timestamp("us", tz="UTC"), "when that run labelled it (UTC)")])


def _has_candidates(unit) -> bool:
    """Whether a local unit's sidecar names candidates (cheap: the sidecar alone is read)."""
    from pathlib import Path

    from raypipe.scans.sidecar import read_sidecar, sidecar_path
    from raypipe.storage import is_remote

    if is_remote(unit.uri):
        return False
    try:
        path = sidecar_path(Path(unit.uri))
        return bool(path and read_sidecar(path).get("candidates"))
    except Exception:  # noqa: BLE001 - a bad sidecar becomes the unit's error row later
        return False


def _label(todo, plan: RunPlan, settings: TableSettings, summary: LabelSummary, model, tag, batch_size,
           planned, lease, limits, show_progress: bool, fov=None, candidates=None, candidate_cache=None,
           sidecar_candidates: bool = False, estimate_fov: bool = False, stall_timeout: float = STALL_TIMEOUT,
           progress=print) -> None:
    import ray
    from ray.data import DataContext
    from ray.data.exceptions import ExecutionTimeoutError

    from raypipe import __version__
    from raypipe.pipelines.cluster import ensure_ray
    from raypipe.pipelines.predict import OUTPUT_SCHEMA, predict_dataset
    from raypipe.progress import Progress, count

    ensure_ray()
    # A stalled run (no block moving anywhere for stall_timeout s: e.g. a node lost mid-run while the
    # inference pool, sized for the cluster as it was, holds every CPU left) fails instead of hanging, and is
    # planned once more on the cluster as it is now; nothing is committed before the sink's single commit.
    DataContext.get_current().execution_no_progress_timeout_s = stall_timeout
    units = [{"uri": u.uri, "kind": u.kind, "fingerprint": u.fingerprint, "key": u.key} for u in todo]
    schema = _table_schema(OUTPUT_SCHEMA)
    labelled_at = now_utc()

    def add_run_columns(batch: pa.Table, counter=None) -> pa.Table:
        n = batch.num_rows
        count(counter, n)
        batch = batch.append_column("run_id", pa.array([summary.run_id] * n, pa.string()))
        batch = batch.append_column("run_date", pa.array([summary.run_date] * n, pa.string()))
        batch = batch.append_column("labelled_at", pa.array([labelled_at] * n, pa.timestamp("us", tz="UTC")))
        return batch.select(schema.names).cast(schema)

    from raypipe.pipelines.labels_sink import LabelsSink

    for attempt in (1, 2):
        rows = predict_dataset(units, model=model, batch_size=batch_size, storage_options=settings.storage_options,
                               fov=fov, limits=limits,
                               candidates=candidates, rank_candidates_too=bool(candidates) or sidecar_candidates,
                               candidate_cache=candidate_cache, estimate_fov=estimate_fov)
        sink = LabelsSink(settings, planned_snapshot=planned, replace_units=[redact(u.uri) for u in plan.replace],
                          lease=lease, snapshot_properties={
                              "raypipe.run-id": summary.run_id, "raypipe.version": __version__,
                              "raypipe.model": tag, "raypipe.input": redact(summary.input_uri),
                              "raypipe.units-new": str(len(plan.new)), "raypipe.units-replaced": str(len(plan.replace))})
        try:
            with Progress(_expected_stacks(todo), what="stacks", label="label", enabled=show_progress) as bar:
                rows.map_batches(add_run_columns, batch_format="pyarrow", batch_size=None, num_cpus=0.5,
                                 fn_kwargs={"counter": bar.counter}).write_datasink(sink)
            break
        except ExecutionTimeoutError:
            if attempt == 2:
                raise
            progress(f"label: no progress for {stall_timeout:.0f} s (a node lost?); labelling the same units again "
                     f"on the cluster as it is now ({int(ray.cluster_resources().get('CPU', 0))} CPUs)")
    mine = open_table(settings).scan(row_filter=f"run_id == '{summary.run_id}'",
                                     selected_fields=("status", "error", "unit")).to_arrow()
    status = mine["status"].to_pylist()
    summary.ok = status.count("ok")
    summary.errors = len(status) - summary.ok
    failed = [(_short(e), u) for s, e, u in zip(status, mine["error"].to_pylist(), mine["unit"].to_pylist()) if s != "ok"]
    reasons = Counter(reason for reason, _ in failed)
    summary.error_reasons = dict(reasons.most_common(10))
    for reason, unit in failed:
        if reason in summary.error_reasons and len(summary.error_examples.setdefault(reason, [])) < 3:
            summary.error_examples[reason].append(unit)


def _expected_stacks(units) -> int | None:
    """How many stacks the units hold: one per folder or NPZ; an archive's index where it is local."""
    from raypipe.scans.formats import multi_format
    from raypipe.storage import is_remote

    total = 0
    for unit in units:
        if not unit.multi:
            total += 1
        elif is_remote(unit.uri):
            return None
        else:
            try:
                total += len(multi_format(unit.uri).list_ids(unit.uri, None))
            except Exception:  # noqa: BLE001 - a bad archive becomes one error row
                total += 1
    return total


def _short(error: str | None) -> str:
    """An error's reason without the file (for grouping): the text after the last ': '."""
    text = error or "unknown"
    return text.rsplit(": ", 1)[-1][:120]
