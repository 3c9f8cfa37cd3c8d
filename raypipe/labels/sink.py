"""The Ray Data writer of the labels table: one Iceberg commit per run (see raypipe.labels.table).

Ray Data's own Iceberg writer (``Dataset.write_iceberg``) writes the data files in the workers and commits
them on the driver in one transaction; :class:`LabelsSink` adds what the nightly job needs to it:
the commit deletes the earlier rows of the units being replaced in the same transaction, and happens only
if the writer lease is still held and the table is still at the snapshot the run planned from. Iceberg's
own commit check (the branch head must equal the transaction's parent snapshot) closes the remaining gap,
and the lease is checked once more inside the commit's own database transaction (``WriterLease.fenced``).
A catalog away for a while is waited out (``retry_catalog``); a commit whose acknowledgement was lost is
recognised on the retry by the run id in the table's newest snapshot.
It relies on two methods of Ray 2.60's ``IcebergDatasink`` (``on_write_complete``, ``_append_and_commit``);
raypipe pins that Ray version.
"""

from __future__ import annotations

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import In
from ray.data._internal.datasource.iceberg_datasink import IcebergDatasink

from raypipe.labels.lease import WriterLease
from raypipe.labels.table import TableError, TableSettings, retry_catalog
from raypipe.storage import redact


class LabelsSink(IcebergDatasink):
    def __init__(self, settings: TableSettings, *, planned_snapshot: int | None, replace_units: list[str],
                 lease: WriterLease, snapshot_properties: dict[str, str]) -> None:
        super().__init__(settings.table, catalog_kwargs=settings.catalog_properties(),
                         snapshot_properties=snapshot_properties)
        self._where = redact(settings.catalog)
        self.planned_snapshot = planned_snapshot
        self.replace_units = replace_units
        self._lease = lease
        self.committed_rows = 0
        self.committed_snapshot: int | None = None

    def __getstate__(self) -> dict:  # the workers get no lease (it holds a database engine and a thread)
        state = super().__getstate__()
        state.pop("_lease", None)
        return state

    def on_write_complete(self, write_result) -> None:
        self._lease.renew()  # LeaseLost: another writer took over; commit nothing
        files = [f for r in write_result.write_returns if r for f in r.data_files]
        self.committed_rows = sum(f.record_count for f in files)
        self._snapshot_properties["raypipe.rows"] = str(self.committed_rows)
        retry_catalog(lambda: self._commit(write_result), "commit the run to the labels table", where=self._where)
        self._reload_table()
        self.committed_snapshot = self._table.metadata.current_snapshot_id

    def _commit(self, write_result) -> None:
        """One attempt: the table as it is now; nothing to do when an earlier attempt landed (its answer
        lost), refused when another writer moved it, else IcebergDatasink's commit."""
        self._reload_table()
        head = self._table.current_snapshot()
        if head is not None and head.summary.get("raypipe.run-id") == self._snapshot_properties["raypipe.run-id"]:
            return
        if (head.snapshot_id if head else None) != self.planned_snapshot:
            raise TableError(f"the labels table changed while this run labelled (snapshot {head.snapshot_id}, "
                             f"planned on {self.planned_snapshot}); nothing committed, the next run redoes this work")
        try:
            super().on_write_complete(write_result)
        except CommitFailedException as exc:  # moved between the check and the commit
            raise TableError("the labels table changed while this run committed (another writer); nothing "
                             "committed, the next run redoes this work") from exc

    def _append_and_commit(self, txn, data_files, branch: str = "main") -> None:
        # IcebergDatasink._append_and_commit's steps, with the earlier rows of the units being replaced deleted
        # in the same commit, the lease fenced inside it, and no retry of a failed transaction here (PyIceberg
        # refuses to reuse one; on_write_complete retries with a new one)
        if self.replace_units:
            txn.delete(delete_filter=In("unit", self.replace_units), snapshot_properties=self._snapshot_properties)
        with txn._append_snapshot_producer(self._snapshot_properties, branch=branch) as append_files:
            for data_file in data_files:
                append_files.append_data_file(data_file)
        with self._lease.fenced(self._table.catalog):
            txn.commit_transaction()
