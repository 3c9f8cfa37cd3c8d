"""Table maintenance: compaction, snapshot expiry and orphan removal on a real Iceberg table (SQLite catalog)."""

from __future__ import annotations

import os
import time

import pyarrow as pa
import pytest

SCHEMA = pa.schema([pa.field("unit", pa.string()), pa.field("n", pa.int64())])


def _nights(out, nights: int, per_night: int = 3):
    """A table written as the nightly job writes it: one small commit per night."""
    from raypipe.labels.table import TableSettings, open_table

    settings = TableSettings(str(out))
    table = open_table(settings, SCHEMA, create=True)
    for night in range(nights):
        table.append(pa.table({"unit": [f"night{night:03d}/scan{k}" for k in range(per_night)],
                               "n": [night * per_night + k for k in range(per_night)]}, schema=SCHEMA))
    return settings, open_table(settings)


def _files(folder, suffix):
    return sorted(p for p in folder.rglob(f"*{suffix}"))


def test_maintenance_compacts_expires_and_removes_only_its_own_orphans(tmp_path):
    from raypipe.labels.maintain import maintain_table
    from raypipe.labels.table import TableError, open_table, read_labels

    out = tmp_path / "labels"
    settings, table = _nights(out, 12)
    before = read_labels(str(out)).sort_by("n")
    first_snapshot = table.metadata.snapshots[0]
    data = out / "table" / "data"
    assert len(_files(data, ".parquet")) == 12
    notes = data / "notes.txt"  # a file raypipe did not write, in its folder: never deleted
    notes.write_text("mine")
    stray = data / "someone-elses.parquet"
    stray.write_bytes(b"PAR1")
    old = time.time() - 7200
    os.utime(stray, (old, old))

    summary = maintain_table(str(out), keep_days=0, retain_last=3, orphan_age_s=0, min_small_files=4, progress=None)
    assert (summary.data_files_before, summary.data_files_after, summary.files_compacted) == (12, 1, 12)
    assert (summary.snapshots_expired, summary.snapshots_kept) == (10, 3)  # 12 nights and the compaction
    after = read_labels(str(out)).sort_by("n")
    assert after.equals(before)  # the rows a reader sees do not change
    table = open_table(settings)
    assert len(table.metadata.snapshots) == 3
    assert len(_files(data, ".parquet")) == 12 + 1  # the small files still referenced by the two nights kept
    assert notes.exists() and not stray.exists()  # an unreferenced .parquet in its data folder is an orphan
    with pytest.raises(Exception):
        read_labels(str(out), as_of=first_snapshot.snapshot_id)  # expired: as_of reads end there

    again = maintain_table(str(out), keep_days=0, retain_last=1, orphan_age_s=0, progress=None)
    assert (again.files_compacted, again.data_files_after, again.snapshots_expired) == (0, 1, 2)
    table = open_table(settings)
    assert [p.name for p in _files(data, ".parquet")] == \
        [f.file.file_path.rsplit("/", 1)[1] for f in table.scan().plan_files()]  # the 12 small files are gone
    assert again.orphans_removed >= 12 and notes.exists()
    manifests = _files(out / "table" / "metadata", ".avro")
    referenced = {s.manifest_list for s in table.metadata.snapshots}
    referenced |= set(table.inspect.all_manifests().column("path").to_pylist())
    assert {f"file://{p}" for p in manifests} == referenced  # unreferenced manifests removed, no more
    assert read_labels(str(out)).sort_by("n").equals(before)

    with pytest.raises(TableError, match="nothing has been labelled there yet"):
        maintain_table(str(tmp_path / "none"), progress=None)


def test_maintenance_keeps_recent_history_by_default(tmp_path):
    from raypipe.labels.maintain import maintain_table
    from raypipe.labels.table import read_labels

    out = tmp_path / "labels"
    _, table = _nights(out, 5)
    first = table.metadata.snapshots[0].snapshot_id
    summary = maintain_table(str(out), progress=None)  # 30 days of history kept, orphans younger than 1 h kept
    assert summary.snapshots_expired == 0 and summary.orphans_removed == 0 and summary.files_compacted == 5
    assert read_labels(str(out), as_of=first).num_rows == 3 and read_labels(str(out)).num_rows == 15


def test_maintain_command_reports_in_one_line_and_waits_for_a_writer(tmp_path, capsys):
    from raypipe.cli import main
    from raypipe.labels.lease import WriterLease

    out = tmp_path / "labels"
    settings, _ = _nights(out, 6)
    assert main(["maintain", str(out), "--keep-days", "0", "-q"]) == 0
    said = capsys.readouterr().out.strip().splitlines()
    assert said == [said[0]] and "6 -> 1 data files (6 small files compacted), 6 snapshots expired (1 kept)" in said[0]
    holder = WriterLease(settings.lease_url(), f"{settings.table}@{settings.location}").acquire(0)
    try:  # a labelling job holds the table: maintenance waits, then says who holds it (exit 3)
        assert main(["maintain", str(out), "--lease-wait", "0.5"]) == 3
        assert "another raypipe job is writing" in capsys.readouterr().err
    finally:
        holder.release()
