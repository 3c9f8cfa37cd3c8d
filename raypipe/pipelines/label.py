"""``label_archive``: the nightly job. Labels the scans not labelled before; idempotent and atomic.

Layout under ``output_uri``::

    run_date=2026-11-24/<run_id>-00000.parquet   labelled rows (columns: raypipe.pipelines.predict.OUTPUT_SCHEMA)
    _ledger/<run_id>.json                        the scan units a committed run labelled (uri + fingerprint)
    _staging/<run_id>/                           a run in progress (never read as output)

A run: list the units under the input, drop those in the ledger; ``run_id`` is a hash of the units
left, so a run killed before its commit is redone under the same id. Rows are written by Ray Data to
``_staging/<run_id>/``, then renamed into ``run_date=<date>/<run_id>-<k>.parquet`` (files of that
``run_id`` already there, from a killed run, are removed first), then the ledger entry is written:
the commit. A re-run after success finds nothing new; a re-run after a kill gives the same rows once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.pipelines.predict import predict_dataset, read_units
from raypipe.scans.units import find_units
from raypipe.storage import StorageOptions, arrow_filesystem, filesystem, join, redact, write_bytes_atomic


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

    @property
    def stacks_per_second(self) -> float:
        return (self.ok + self.errors) / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "input_uri": redact(self.input_uri), "output_uri": redact(self.output_uri),
                "stacks_per_second": round(self.stacks_per_second, 3)}


def labelled_units(fs, base: str) -> set[str]:
    """Unit keys in the ledger."""
    keys: set[str] = set()
    for path in fs.glob(join(base, "_ledger", "*.json")):
        keys.update(json.loads(fs.cat_file(path))["units"])
    return keys


def label_archive(uri: str, output_uri: str, *, model: str | None = None, run_date: str | None = None,
                  batch_size: int = 16, storage_options: StorageOptions = None) -> LabelSummary:
    """Label the new scans under ``uri`` into Parquet under ``output_uri`` (see module docs)."""
    start = time.perf_counter()
    run_date = run_date or dt.date.today().isoformat()
    units, ignored = find_units(uri, storage_options)
    fs, base = filesystem(output_uri, storage_options)
    fs.invalidate_cache()
    done = labelled_units(fs, base)
    todo = [u for u in units if u.key not in done]
    run_id = hashlib.sha1("\n".join(u.key for u in todo).encode()).hexdigest()[:16]
    print(f"label: {len(units)} scan units under {redact(uri)} ({ignored} other files ignored), "
          f"{len(units) - len(todo)} labelled before, {len(todo)} to label; run {run_id}", flush=True)
    summary = LabelSummary(uri, output_uri, run_id, run_date, len(units), len(todo), ignored, 0, 0, 0.0)
    if todo:
        staging = join(base, "_staging", run_id)
        if fs.exists(staging):
            fs.rm(staging, recursive=True)
        scans = read_units([{"uri": u.uri, "kind": u.kind, "fingerprint": u.fingerprint, "key": u.key}
                            for u in todo], storage_options)
        rows = predict_dataset(scans, model=model, batch_size=batch_size, storage_options=storage_options)
        rows.write_parquet(("s3://" if output_uri.startswith("s3://") else "") + staging,
                           filesystem=arrow_filesystem(fs))
        summary.ok, summary.errors = _publish(fs, base, staging, run_id, run_date)
        write_bytes_atomic(fs, join(base, "_ledger", f"{run_id}.json"), json.dumps(
            {"run_id": run_id, "run_date": run_date, "input": redact(uri), "ok": summary.ok,
             "errors": summary.errors, "units": [u.key for u in todo]}, indent=1).encode())
        fs.invalidate_cache()
        if fs.exists(staging):  # on S3 the emptied "folder" is already gone
            fs.rm(staging, recursive=True)
    summary.seconds = time.perf_counter() - start
    return summary


def _publish(fs, base: str, staging: str, run_id: str, run_date: str) -> tuple[int, int]:
    """Move the staged files into the run-date partition; return the ok and error row counts."""
    for stale in fs.glob(join(base, "run_date=*", f"{run_id}-*.parquet")):
        fs.rm(stale)
    ok = errors = 0
    partition = join(base, f"run_date={run_date}")
    fs.makedirs(partition, exist_ok=True)
    staged = sorted(fs.glob(join(staging, "*.parquet")))
    for k, path in enumerate(staged):
        with fs.open(path, "rb") as f:
            status = pq.read_table(f, columns=["status"])["status"].to_pylist()
        ok += status.count("ok")
        errors += len(status) - status.count("ok")
        fs.mv(path, join(partition, f"{run_id}-{k:05d}.parquet"))
    return ok, errors


def read_labels(output_uri: str, storage_options: StorageOptions = None) -> pa.Table:
    """Every labelled row under ``output_uri`` (all run dates) as one pyarrow table, plus ``run_date``."""
    fs, base = filesystem(output_uri, storage_options)
    fs.invalidate_cache()
    paths = sorted(fs.glob(join(base, "run_date=*", "*.parquet")))
    if not paths:
        raise FileNotFoundError(f"{redact(output_uri)}: no labelled rows")
    tables = []
    for path in paths:
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
        run_date = path.split("/")[-2].removeprefix("run_date=")
        tables.append(table.append_column("run_date", pa.array([run_date] * table.num_rows, pa.string())))
    return pa.concat_tables(tables)
