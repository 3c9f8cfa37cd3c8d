"""``build_library``: a library of known molecules built by a Ray Data job (the data set is described in
:mod:`raypipe.identify.library`), resumable by shard like ``raypipe simulate``."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import pyarrow as pa

from raypipe.identify.library import build_shard, settings_of
from raypipe.storage import StorageOptions, exists, filesystem, join, redact, write_bytes_atomic
from raypipe.window import DEFAULT_WINDOW, Window


def _parquet(table: pa.Table) -> bytes:
    import io

    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


class ShardBuilder:
    """Ray Data actor: builds whole shards and writes them (with ``simulate``, ppafm set up once)."""

    def __init__(self, uri: str, storage_options: StorageOptions, seed: int, window: Window, simulate: bool) -> None:
        import os

        os.environ.setdefault("POCL_MAX_PTHREAD_COUNT", "1")
        self.fs, self.base = filesystem(uri, storage_options)
        self.seed = seed
        self.cache = None
        if simulate:
            from raypipe.identify.candidates import CandidateCache

            from raypipe.identify.search import LIBRARY_CONFORMERS

            self.cache = CandidateCache(window, join(uri, "cache"), storage_options=storage_options,
                                        conformers=LIBRARY_CONFORMERS, keep_depictions=False)

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {"shard": [], "rows": [], "rejects": [], "seconds": []}
        for shard, molecules in zip(batch["shard"], batch["molecules"]):
            start = time.perf_counter()
            rows, rejects = build_shard(json.loads(molecules), self.seed, self.cache)
            write_bytes_atomic(self.fs, join(self.base, "rejects", f"{shard}.parquet"), _parquet(rejects))
            write_bytes_atomic(self.fs, join(self.base, "shards", f"{shard}.parquet"), _parquet(rows))
            for key, value in (("shard", shard), ("rows", rows.num_rows), ("rejects", rejects.num_rows),
                               ("seconds", time.perf_counter() - start)):
                out[key].append(value)
        return out


@dataclass
class LibrarySummary:
    uri: str
    molecules: int
    shards: int
    shards_skipped: int
    rows: int
    rejects: int
    seconds: float
    simulated: bool
    first_rejects: list[dict] = field(default_factory=list)

    @property
    def molecules_per_second(self) -> float:
        done = self.rows + self.rejects
        return done / self.seconds if self.seconds and done else 0.0

    def report(self) -> str:
        lines = [f"library: {self.rows} molecules in {redact(self.uri)} ({self.shards} shards, "
                 f"{self.shards_skipped} already built){' with simulations' if self.simulated else ''}; "
                 f"{self.rejects} input lines refused; {self.seconds:.0f} s"
                 + (f" ({self.molecules_per_second:.1f} molecules/s)" if self.shards > self.shards_skipped else "")]
        for reject in self.first_rejects:
            lines.append(f"  refused {reject['id']} {reject['smiles']!r}: {reject['reason']}")
        return "\n".join(lines)


def build_library(molecules, uri: str, *, simulate: bool = False, shard_size: int = 256, seed: int = 0,
                  window: Window | None = None, limit: int | None = None, num_actors: int | None = None,
                  storage_options: StorageOptions = None, progress=print) -> LibrarySummary:
    """Build (or continue) the library at ``uri`` from ``molecules`` (SMILES list, .smi/.csv path or URI; ids
    or names in the file's second column). Finished shards are skipped, so a killed build continues where it
    stopped; a build into a library made with other settings raises ValueError. With ``simulate`` each
    molecule's simulations and depictions are made too (``cache/``), so every scan later finds them ready.
    Starts a local Ray when none is running. Returns a :class:`LibrarySummary`."""
    import ray

    from raypipe.chem.sources import read_molecule_list
    from raypipe.pipelines.cluster import ensure_ray

    window = window or DEFAULT_WINDOW
    start = time.perf_counter()
    pairs = read_molecule_list(molecules, storage_options)[:limit]
    fs, base = filesystem(uri, storage_options)
    settings = settings_of(window, seed)
    path = join(base, "library.json")
    if exists(fs, path):
        previous = json.loads(fs.cat_file(path))
        if previous != settings:
            raise ValueError(f"{redact(uri)} holds a library with other settings ({previous}); build into a new place")
    else:
        write_bytes_atomic(fs, path, json.dumps(settings, indent=2).encode())
    shards = [(f"shard-{k // shard_size:05d}", pairs[k:k + shard_size]) for k in range(0, len(pairs), shard_size)]
    fs.invalidate_cache()
    done = {p.rsplit("/", 1)[-1].removesuffix(".parquet") for p in fs.glob(join(base, "shards", "shard-*.parquet"))}
    todo = [(name, mols) for name, mols in shards if name not in done]
    progress(f"library: {len(pairs)} molecules in {len(shards)} shards, {len(shards) - len(todo)} already built; "
             f"{redact(uri)}")
    if todo:
        ensure_ray()
        ray.data.DataContext.get_current().execution_no_progress_timeout_s = -1  # a shard is one long block
        cpus = int(ray.cluster_resources().get("CPU", 1))
        size = num_actors or max(1, min(len(todo), cpus))
        items = [{"shard": name, "molecules": json.dumps(mols)} for name, mols in todo]
        results = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            ShardBuilder, batch_size=1, num_cpus=1, compute=ray.data.ActorPoolStrategy(size=size),
            fn_constructor_kwargs={"uri": uri, "storage_options": storage_options, "seed": seed, "window": window,
                                   "simulate": simulate})
        for n, row in enumerate(results.iter_rows(), start=1):
            progress(f"  {row['shard']}: {row['rows']} molecules, {row['rejects']} refused, {row['seconds']:.1f} s "
                     f"({n}/{len(todo)})")
    return _manifest(fs, base, uri, settings, [name for name, _ in shards], len(pairs), len(shards) - len(todo),
                     time.perf_counter() - start, simulate)


def _manifest(fs, base: str, uri: str, settings: dict, names: list[str], molecules: int, skipped: int,
              seconds: float, simulated: bool) -> LibrarySummary:
    import pyarrow.parquet as pq

    rows = rejects = 0
    first: list[dict] = []
    for name in names:
        with fs.open(join(base, "shards", f"{name}.parquet"), "rb") as f:
            rows += pq.ParquetFile(f).metadata.num_rows
        with fs.open(join(base, "rejects", f"{name}.parquet"), "rb") as f:
            table = pq.read_table(f)
        rejects += table.num_rows
        first += table.to_pylist()[: max(0, 5 - len(first))]
    write_bytes_atomic(fs, join(base, "manifest.json"), json.dumps(
        {**settings, "molecules": rows, "rejects": rejects, "shards": names}, indent=2).encode())
    return LibrarySummary(uri, molecules, len(names), skipped, rows, rejects, seconds, simulated, first)
