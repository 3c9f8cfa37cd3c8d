"""Table maintenance, as Iceberg users expect it: compact small data files, expire old snapshots, remove
orphans — under the table's writer lease, each change one fenced commit (:mod:`raypipe.labels.lease`).

A nightly job adds one small data file, one manifest and one snapshot per night; after years a read plans
thousands of manifests and opens thousands of files. :func:`maintain_table` (``raypipe maintain OUTPUT``,
or ``raypipe label ... --maintain`` at the end of a run, under the run's lease):

1. **compacts**: the current snapshot's data files under ``small_file_mb`` are read (PyIceberg's own
   reader) and rewritten as files of up to ``target_file_mb``, in one ``overwrite`` commit that removes
   them and adds their rows back; nothing changes for a reader of the current rows;
2. **expires** snapshots older than ``keep_days`` (default 30: ``read_labels(as_of=...)`` reaches that far
   back), keeping at least the newest ``retain_last`` and the current one;
3. **removes orphans**: data files, manifests and manifest lists of this table's folder that no remaining
   snapshot references and that are older than ``orphan_age_s`` (an hour: a running job's files are younger).
   Only files under the table's own ``data/`` and ``metadata/`` folders are ever deleted.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import asdict, dataclass

from raypipe.labels.table import DEFAULT_TABLE, TableSettings, now_utc, open_table, remove_orphans
from raypipe.storage import StorageOptions, redact

__all__ = ["MaintainSummary", "maintain_table"]


@dataclass
class MaintainSummary:
    output_uri: str
    data_files_before: int
    data_files_after: int
    files_compacted: int
    snapshots_expired: int
    snapshots_kept: int
    orphans_removed: int
    seconds: float

    def report(self) -> str:
        return (f"maintain: {redact(self.output_uri)}: {self.data_files_before} -> {self.data_files_after} data files "
                f"({self.files_compacted} small files compacted), {self.snapshots_expired} snapshots expired "
                f"({self.snapshots_kept} kept), {self.orphans_removed} unreferenced files removed "
                f"({self.seconds:.1f} s)")

    def as_dict(self) -> dict:
        return {**asdict(self), "output_uri": redact(self.output_uri)}


def maintain_table(output_uri: str, storage_options: StorageOptions = None, *, catalog: str | None = None,
                   table: str = DEFAULT_TABLE, keep_days: float = 30.0, retain_last: int = 1,
                   compact: bool = True, small_file_mb: float = 32.0, target_file_mb: float = 128.0,
                   min_small_files: int = 4, orphan_age_s: float = 3600.0, lease_wait: float = 900.0,
                   lease=None, progress=print) -> MaintainSummary:
    """Compact, expire and clean the labels table under ``output_uri`` (module docs). ``lease``: a
    :class:`~raypipe.labels.lease.WriterLease` already held (the nightly job's); else one is taken, waiting up
    to ``lease_wait`` s. Raises ``NoLabelsTable`` where nothing was labelled, ``TableError`` as the job does."""
    from raypipe.labels.lease import WriterLease

    start = time.perf_counter()
    settings = TableSettings(output_uri, catalog=catalog, table=table, storage_options=storage_options)
    tbl = open_table(settings)
    own = lease is None
    if own:
        lease = WriterLease(settings.lease_url(), f"{settings.table}@{settings.location}").acquire(lease_wait, progress)
    try:
        files_before = _data_files(tbl)
        compacted = _compact(tbl, files_before, lease, small_file_mb, target_file_mb, min_small_files) if compact else 0
        tbl.refresh()
        expired = _expire(tbl, lease, keep_days, retain_last)
        tbl.refresh()
        removed = remove_orphans(tbl, settings, older_than_s=orphan_age_s, metadata=True)
        summary = MaintainSummary(output_uri, len(files_before), len(_data_files(tbl)), compacted, expired,
                                  len(tbl.metadata.snapshots), removed, time.perf_counter() - start)
    finally:
        if own:
            lease.release()
    return summary


def _data_files(tbl) -> list:
    """The current snapshot's data files, as PyIceberg scan tasks (``task.file``), none for an empty table."""
    if tbl.current_snapshot() is None:
        return []
    return [task for task in tbl.scan().plan_files()]


def _compact(tbl, tasks: list, lease, small_file_mb: float, target_file_mb: float, min_small_files: int) -> int:
    """Rewrite the small ones of the current snapshot's data files (``tasks``) as fewer, bigger ones in one
    fenced commit; returns how many were replaced (0: fewer than ``min_small_files`` small files, nothing done)."""
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files

    small = [task for task in tasks
             if task.file.file_size_in_bytes < small_file_mb * 2**20 and not task.delete_files]
    if len(small) < min_small_files:
        return 0
    bins, current, size = [], [], 0  # groups of files of about target_file_mb each: memory stays bounded
    for task in sorted(small, key=lambda t: t.file.file_path):
        if current and size + task.file.file_size_in_bytes > target_file_mb * 2**20:
            bins.append(current)
            current, size = [], 0
        current.append(task)
        size += task.file.file_size_in_bytes
    bins.append(current)
    write_uuid = uuid.uuid4()
    added = []
    for group in bins:
        rows = ArrowScan(tbl.metadata, tbl.io, tbl.schema(), AlwaysTrue()).to_table(group)
        added.extend(_dataframe_to_data_files(table_metadata=tbl.metadata, df=rows, io=tbl.io, write_uuid=write_uuid))
    txn = tbl.transaction()
    with txn.update_snapshot(snapshot_properties={"raypipe.maintenance": "compact"}).overwrite() as overwrite:
        for task in small:
            overwrite.delete_data_file(task.file)
        for data_file in added:
            overwrite.append_data_file(data_file)
    with lease.fenced(tbl.catalog):
        txn.commit_transaction()
    return len(small)


def _expire(tbl, lease, keep_days: float, retain_last: int) -> int:
    """Expire the snapshots older than ``keep_days``, keeping the newest ``retain_last`` and the current one."""
    snapshots = sorted(tbl.metadata.snapshots, key=lambda s: s.timestamp_ms)
    cutoff = (now_utc() - dt.timedelta(days=keep_days)).timestamp() * 1000
    current = tbl.metadata.current_snapshot_id
    keep = {s.snapshot_id for s in snapshots[-max(retain_last, 1):]} | {current}
    old = [s.snapshot_id for s in snapshots if s.timestamp_ms < cutoff and s.snapshot_id not in keep]
    if not old:
        return 0
    expire = tbl.maintenance.expire_snapshots().by_ids(old)
    with lease.fenced(tbl.catalog):
        expire.commit()
    return len(old)
