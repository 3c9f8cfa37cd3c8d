"""``simulate_dataset``: molecules -> ppafm stacks + depictions -> Parquet shards, on Ray Data.

Layout under ``output_uri``::

    run.json                       the run's settings (a re-run must use the same ones)
    shards/shard-00000.parquet     rows of molecules 0..shard_size-1 (schema: raypipe.simulation.shards)
    rejects/shard-00000.parquet    molecules of that shard rejected, with the reason
    manifest.json                  totals and the shard list, written when every shard is done

Molecules are cut into shards of ``shard_size`` in list order, so shard k always holds the same
molecules. Each shard is one task for a pool of simulation actors (each initialises OpenCL and ppafm
once); an actor writes the shard's rejects, then the shard, each atomically (temporary file + rename
locally, one PUT on S3). A re-run skips shards already written, so a killed run resumes where it
stopped and never shows a half-written shard.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import ray

from raypipe.chem.sources import read_molecule_list
from raypipe.simulation.params import ParameterSpec
from raypipe.simulation.ppm import SimulationSettings, Simulator
from raypipe.simulation.shards import MAX_CORRUGATION, build_shard, table_bytes
from raypipe.storage import StorageOptions, exists, filesystem, join, redact, write_bytes_atomic


@dataclass
class SimulationSummary:
    output_uri: str
    shards: int
    skipped: int
    written: int
    rows: int
    rejects: int
    seconds: float

    @property
    def stacks_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


class ShardSimulator:
    """Ray Data actor: simulates whole shards and writes them (OpenCL/ppafm set up once)."""

    def __init__(self, output_uri: str, storage_options: StorageOptions, spec: ParameterSpec, seed: int,
                 settings: SimulationSettings, max_corrugation: float, threads: int, compact: bool = False) -> None:
        os.environ.setdefault("POCL_MAX_PTHREAD_COUNT", str(threads))  # one PoCL thread per reserved CPU
        self.simulator = Simulator(settings)
        self.fs, self.base = filesystem(output_uri, storage_options)
        self.spec, self.seed, self.max_corrugation, self.compact = spec, seed, max_corrugation, compact

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"shard": [], "rows": [], "rejects": [], "seconds": []}
        for shard, molecules in zip(batch["shard"], batch["molecules"]):
            start = time.perf_counter()
            table, rejects = build_shard(json.loads(molecules), self.spec, self.seed, self.simulator,
                                         self.max_corrugation, self.compact)
            write_bytes_atomic(self.fs, join(self.base, "rejects", f"{shard}.parquet"), table_bytes(rejects))
            write_bytes_atomic(self.fs, join(self.base, "shards", f"{shard}.parquet"), table_bytes(table))
            for key, value in (("shard", shard), ("rows", table.num_rows), ("rejects", rejects.num_rows),
                               ("seconds", time.perf_counter() - start)):
                out[key].append(value)
        return out


def simulate_dataset(molecules: str | list[str] | None, output_uri: str, *,
                     parameter_sets: ParameterSpec = "quam24", seed: int = 0, shard_size: int = 8,
                     limit: int | None = None, settings: SimulationSettings | None = None,
                     max_corrugation: float = MAX_CORRUGATION, num_actors: int | None = None,
                     threads_per_actor: int = 1, compact: bool | None = None,
                     storage_options: StorageOptions = None) -> SimulationSummary:
    """Simulate training data for ``molecules`` (SMILES list, .smi/.csv path or URI, None = RDKit's
    NCI first_5K) into Parquet shards under ``output_uri`` (a local folder or ``s3://``).

    ``parameter_sets``: "quam24", "random:K" or a list of (amplitude Å, stiffness N/m); ``limit``:
    only the first N molecules; ``num_actors``: simulation actors (default: as many as the cluster's
    CPUs allow at ``threads_per_actor`` CPUs each); ``settings``: tip height, grid density, distance
    jitter, window (:class:`raypipe.simulation.ppm.SimulationSettings`); ``compact``: stacks stored as 8 bits
    per slice with each slice's range (:mod:`raypipe.simulation.schema`; None: as the shards already there,
    else plain). Starts a local Ray when none is running. Returns a :class:`SimulationSummary` (shards written and skipped, rows, rejects, seconds).

    Raises FileNotFoundError for a missing molecule list, ValueError for a re-run into ``output_uri``
    with other settings than its ``run.json`` or for bad parameter sets. Molecules that cannot be
    simulated are not errors: they are written to ``rejects/`` with the reason.
    """
    settings = settings or SimulationSettings()
    pairs = read_molecule_list(molecules, storage_options)[:limit]
    fs, base = filesystem(output_uri, storage_options)
    config = {"format": "raypipe-sim", "version": 1, "seed": seed, "shard_size": shard_size,
              "parameter_sets": parameter_sets, "max_corrugation": max_corrugation,
              "settings": _settings_record(settings), "molecules": len(pairs)}
    fs.invalidate_cache()
    existing = sorted(fs.glob(join(base, "shards", "shard-*.parquet")))
    compact = _storage_form(fs, existing, compact, output_uri)  # one form per data set: refused before anything
    _check_run_config(fs, base, config)

    shards = [(f"shard-{k // shard_size:05d}", pairs[k:k + shard_size]) for k in range(0, len(pairs), shard_size)]
    done = {path.rsplit("/", 1)[-1].removesuffix(".parquet") for path in existing}
    todo = [(name, mols) for name, mols in shards if name not in done]
    print(f"simulate: {len(pairs)} molecules in {len(shards)} shards, {len(shards) - len(todo)} already done, "
          f"output {redact(output_uri)}", flush=True)
    start = time.perf_counter()
    written = []
    if todo:
        from raypipe.pipelines.cluster import ensure_ray

        ensure_ray()
        # a shard is one block: on a busy machine one can take longer than Ray Data's 30-minute
        # "no progress" guard, which would abort a healthy run (a dead actor still fails it at once)
        ray.data.DataContext.get_current().execution_no_progress_timeout_s = -1
        cpus = int(ray.cluster_resources().get("CPU", 1))
        size = num_actors or max(1, min(len(todo), cpus // threads_per_actor))
        items = [{"shard": name, "molecules": json.dumps(mols)} for name, mols in todo]
        results = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            ShardSimulator, batch_size=1, num_cpus=threads_per_actor,
            compute=ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=1),
            fn_constructor_kwargs={"output_uri": output_uri, "storage_options": storage_options,
                                   "spec": parameter_sets, "seed": seed, "settings": settings,
                                   "max_corrugation": max_corrugation, "threads": threads_per_actor,
                                   "compact": compact},
        )
        for row in results.iter_rows():
            written.append(row)
            print(f"  {row['shard']}: {row['rows']} stacks, {row['rejects']} rejected, {row['seconds']:.1f} s "
                  f"({len(written)}/{len(todo)})", flush=True)
    seconds = time.perf_counter() - start
    summary = _write_manifest(fs, base, config, [name for name, _ in shards])
    return SimulationSummary(output_uri, len(shards), len(shards) - len(todo), len(written),
                             sum(r["rows"] for r in written), summary["rejects"], seconds)


def _storage_form(fs, existing: list[str], compact: bool | None, output_uri: str) -> bool:
    """Plain or compact shards: as asked, else as those already written (the two never mix in one set)."""
    if not existing:
        return bool(compact)
    import pyarrow.parquet as pq

    from raypipe.simulation.schema import is_compact

    with fs.open(existing[0], "rb") as f:
        theirs = is_compact(pq.ParquetFile(f).schema_arrow)
    if compact is not None and compact != theirs:
        raise ValueError(f"{redact(output_uri)} holds {'compact' if theirs else 'plain'} shards; continue it "
                         f"{'with' if theirs else 'without'} --compact, or use a new output location")
    return theirs


def _settings_record(settings: SimulationSettings) -> dict:
    """The settings as run.json stores them; fields at their "off" value are left out, so runs made
    before such a field existed still resume."""
    record = asdict(settings)
    if not record["distance_jitter"]:
        del record["distance_jitter"]
    return record


def _check_run_config(fs, base: str, config: dict) -> None:
    path = join(base, "run.json")
    if exists(fs, path):
        previous = json.loads(fs.cat_file(path))
        if previous != json.loads(json.dumps(config)):
            raise ValueError(f"{path} holds a run with other settings; use a new output location "
                             f"(previous: {previous}, now: {config})")
    else:
        write_bytes_atomic(fs, path, json.dumps(config, indent=2).encode())


def _write_manifest(fs, base: str, config: dict, names: list[str]) -> dict:
    """Count rows and rejects of every shard from the Parquet footers; write manifest.json."""
    import pyarrow.parquet as pq

    entries = []
    for name in names:
        shard, rejects = join(base, "shards", f"{name}.parquet"), join(base, "rejects", f"{name}.parquet")
        with fs.open(shard, "rb") as f:
            rows = pq.ParquetFile(f).metadata.num_rows
        with fs.open(rejects, "rb") as f:
            n_rejects = pq.ParquetFile(f).metadata.num_rows
        entries.append({"name": name, "rows": rows, "rejects": n_rejects})
    manifest = {**config, "shards": entries, "rows": sum(e["rows"] for e in entries),
                "rejects": sum(e["rejects"] for e in entries)}
    write_bytes_atomic(fs, join(base, "manifest.json"), json.dumps(manifest, indent=2).encode())
    return manifest
