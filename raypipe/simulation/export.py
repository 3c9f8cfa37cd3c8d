"""Simulation shards -> raypipe's HDF5 scan archive (stacks with their truth in the metadata)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from raypipe.scans.archive import write_archive
from raypipe.scans.stack import ScanStack
from raypipe.simulation.schema import read_stacks, stack_columns
from raypipe.simulation.ppm import Z_STEP
from raypipe.storage import StorageOptions, filesystem, join


def read_shard_rows(dataset_uri: str, *, split: str | None = None, limit: int | None = None,
                    storage_options: StorageOptions = None) -> Iterator[dict]:
    """Rows of a simulated dataset (every shard in name order, plain or compact: ``stack`` is the Δf array),
    optionally one split, at most ``limit``."""
    fs, base = filesystem(dataset_uri, storage_options)
    paths = sorted(fs.glob(join(base, "shards", "shard-*.parquet")))
    if not paths:
        raise FileNotFoundError(f"{dataset_uri}: no shards/shard-*.parquet (not a simulated dataset?)")
    count = 0
    for path in paths:
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
        if split is not None:
            table = table.filter(pc.equal(table["split"], split))
        stacks = read_stacks(table)
        for row, stack in zip(table.drop_columns(stack_columns(table.schema)).to_pylist(), stacks):
            if limit is not None and count >= limit:
                return
            row["stack"] = stack
            count += 1
            yield row


def row_to_stack(row: dict) -> ScanStack:
    """A simulated row as a ScanStack whose metadata carries the truth (SMILES, formula, atoms)."""
    n = row["stack"].shape[0]
    metadata = {
        "name": row["molecule_id"], "format": "ppafm", "mode": "FM df", "fov": [row["fov"]] * 2,
        "amplitude": row["amplitude"], "stiffness": row["stiffness"], "distance": row["distance"],
        "split": row["split"],
        "truth": {"smiles": row["smiles"], "formula": row["formula"], "corrugation": row["corrugation"],
                  "atoms": row["atoms"], "bonds": row["bonds"]},
    }
    scan_id = f"{row['molecule_id']}_A{round(row['amplitude'] * 100):03d}_K{round(row['stiffness'] * 100):03d}"
    return ScanStack(row["stack"].astype("float32"), [Z_STEP * k for k in range(n)], metadata, scan_id=scan_id)


def export_archive(dataset_uri: str, path: str | Path, *, split: str | None = None, limit: int | None = None,
                   storage_options: StorageOptions = None) -> int:
    """Write the rows of a simulated dataset to an HDF5 archive at ``path``; return how many stacks."""
    rows = read_shard_rows(dataset_uri, split=split, limit=limit, storage_options=storage_options)
    return write_archive(path, (row_to_stack(r) for r in rows))
