"""The Ray Data writer of the labels table: one Iceberg commit per run (see raypipe.labels.table).

Ray Data's own Iceberg writer (``Dataset.write_iceberg``) writes the data files in the workers and commits
them on the driver in one transaction; :class:`LabelsSink` adds what the nightly job needs to it:
the commit deletes the earlier rows of the units being replaced in the same transaction, and happens only
if the writer lease is still held and the table is still at the snapshot the run planned from. Iceberg's
own commit check (the branch head must equal the transaction's parent snapshot) closes the remaining gap.
It relies on two methods of Ray 2.60's ``IcebergDatasink`` (``on_write_complete``, ``_append_and_commit``);
raypipe pins that Ray version.
"""

from __future__ import annotations

from pyiceberg.expressions import In
from ray.data._internal.datasource.iceberg_datasink import IcebergDatasink

from raypipe.labels.lease import WriterLease
from raypipe.labels.table import TableError, TableSettings


class LabelsSink(IcebergDatasink):
    def __init__(self, settings: TableSettings, *, planned_snapshot: int | None, replace_units: list[str],
                 lease: WriterLease, snapshot_properties: dict[str, str]) -> None:
        super().__init__(settings.table, catalog_kwargs=settings.catalog_properties(),
                         snapshot_properties=snapshot_properties)
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
        head = self._table.metadata.current_snapshot_id
        if head != self.planned_snapshot:
            raise TableError(f"the labels table changed while this run labelled (snapshot {head}, planned on "
                             f"{self.planned_snapshot}); nothing committed, the next run redoes this work")
        files = [f for r in write_result.write_returns if r for f in r.data_files]
        self.committed_rows = sum(f.record_count for f in files)
        self._snapshot_properties["raypipe.rows"] = str(self.committed_rows)
        super().on_write_complete(write_result)
        self._reload_table()
        self.committed_snapshot = self._table.metadata.current_snapshot_id

    def _append_and_commit(self, txn, data_files, branch: str = "main") -> None:
        if self.replace_units:  # supersede: the earlier rows of these units go in the same commit
            txn.delete(delete_filter=In("unit", self.replace_units), snapshot_properties=self._snapshot_properties)
        super()._append_and_commit(txn, data_files, branch=branch)
