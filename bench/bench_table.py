"""The labels table: what a night costs as the table grows, and throughput against the JSON-ledger job.

    python bench/bench_table.py [--rows 10000] [--new 100] [--throughput 1000] [--baseline d68a90e]
    python bench/bench_table.py --nights 365 [--per-night 5]

1. **Growth**: labelling ``--new`` new stacks into a table that already holds ``--rows`` rows (written as
   one commit of ``--new`` rows per night, so the table has as many snapshots and data files as a real
   one) against labelling them into an empty table; each measured twice, alternating, medians reported.
2. **Throughput**: ``label_archive`` on ``--throughput`` stacks into an empty table, against the same job
   at the ``--baseline`` commit (the JSON-ledger version, checked out with ``git worktree``) on the same
   stacks, each in its own process with its own local Ray.

3. **Years of nights** (``--nights N``, only this): a table written as N nights of ``--per-night`` new
   stacks (the first labelled by the job, the others committed as one append each, as ``grow_table``
   does), measured after 10 nights and after N: ``read_labels`` (all rows, median of 3), the nightly job
   (a new unit of ``--per-night`` stacks, its own process and local Ray, median of 2) and the count of data
   and metadata files; once without maintenance, once with it on (``maintain_table`` after every night,
   30 snapshots kept: a month of nights, since the bench's nights are minutes apart; the job run with
   ``maintain=True``).

Stacks: the bundled sample stacks with per-copy noise, 100 per HDF5 archive (``bench_label.make_archive``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_label import make_archive  # noqa: E402

JOB = """
import json, sys, time, ray
ray.init(include_dashboard=False, log_to_driver=False)
from raypipe.labels.job import label_archive
start = time.perf_counter()
s = label_archive(sys.argv[1], sys.argv[2], **json.loads(sys.argv[3]))
print("RESULT", json.dumps({"seconds": time.perf_counter() - start, "rows": s.ok + s.errors}))
"""


def run_job(src: Path, out: Path, pythonpath: Path, kwargs: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    done = subprocess.run([sys.executable, "-c", JOB, str(src), str(out), json.dumps(kwargs)], env=env,
                          capture_output=True, text=True, cwd=pythonpath)
    if done.returncode:
        raise RuntimeError(done.stdout[-3000:] + done.stderr[-3000:])
    return json.loads(done.stdout.split("RESULT ", 1)[1])


def grow_table(out: Path, rows: int, per_night: int, src: Path) -> int:
    """Label ``src`` once, then append copies of its rows under other unit names until ``rows``."""
    import pyarrow as pa

    from raypipe.labels.job import label_archive
    from raypipe.labels.table import TableSettings, open_table

    label_archive(str(src), str(out), settle=0, progress=lambda *_: None)
    settings = TableSettings(str(out))
    table = open_table(settings)
    seed = table.scan().to_arrow()
    night = 0
    while table.scan(selected_fields=("unit",)).to_arrow().num_rows < rows:
        night += 1
        copy = seed.slice(0, per_night)
        units = pa.array([f"{u}.night{night:04d}" for u in copy["unit"].to_pylist()])
        copy = copy.set_column(copy.schema.get_field_index("unit"), "unit", units)
        table.append(copy)
        table.refresh()
    return table.scan(selected_fields=("unit",)).to_arrow().num_rows


def file_counts(out: Path) -> dict:
    folder = out / "table"
    return {"data_files": sum(1 for _ in (folder / "data").rglob("*.parquet")),
            "metadata_files": sum(1 for p in (folder / "metadata").rglob("*") if p.is_file())}


def nights(args) -> dict:
    """Phase 3 (module docs)."""
    import time

    import pyarrow as pa
    import ray

    from raypipe.labels.job import label_archive
    from raypipe.labels.maintain import maintain_table
    from raypipe.labels.table import TableSettings, open_table, read_labels

    # a month of history (the default --keep-days 30) when nights are minutes apart; their files are old
    monthly = {"keep_days": 0, "retain_last": 30, "orphan_age_s": 0, "progress": None}
    results: dict = {"machine": f"{os.cpu_count()} cores, CPU only", "nights": args.nights,
                     "stacks_per_night": args.per_night}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        seed_src = make_archive(tmp / "seed", args.per_night)
        for mode in ("off", "on"):
            out = tmp / f"labels-{mode}"
            ray.init(include_dashboard=False, log_to_driver=False)
            label_archive(str(seed_src), str(out), settle=0, progress=lambda *_: None)
            ray.shutdown()
            seed = open_table(TableSettings(str(out))).scan().to_arrow()
            night = 1

            def grow(to: int) -> None:
                nonlocal night
                table = open_table(TableSettings(str(out)))  # after the jobs' commits
                while night < to:
                    night += 1
                    units = pa.array([f"{u}.night{night:04d}" for u in seed["unit"].to_pylist()])
                    table.append(seed.set_column(seed.schema.get_field_index("unit"), "unit", units))
                    if mode == "on":
                        maintain_table(str(out), **monthly)
                        table = open_table(TableSettings(str(out)))

            def measure(kind: str) -> dict:
                reads = []
                for _ in range(3):
                    start = time.perf_counter()
                    rows = read_labels(str(out)).num_rows
                    reads.append(time.perf_counter() - start)
                counts = file_counts(out)
                jobs = []
                for k in range(2):
                    new = make_archive(tmp / f"{mode}-{kind}{k}", args.per_night)
                    (new / "part000.h5").rename(new / f"{mode}-{kind}{k}.h5")
                    jobs.append(run_job(new, out, ROOT, {"settle": 0, "maintain": mode == "on"})["seconds"])
                figures = {"rows": rows, "read_s": round(statistics.median(reads), 3),
                           "job_s": round(statistics.median(jobs), 2), **counts}
                print(mode, kind, json.dumps(figures), flush=True)
                return figures

            grow(10)
            first = measure("10")
            night += 2  # the two jobs were nights too
            start = time.perf_counter()
            grow(args.nights)
            grown = time.perf_counter() - start
            last = measure(str(args.nights))
            results[f"maintenance_{mode}"] = {
                "after_10_nights": first, f"after_{args.nights}_nights": last,
                "seconds_to_grow": round(grown, 1),
                "read_ratio": round(last["read_s"] / first["read_s"], 2),
                "job_ratio": round(last["job_s"] / first["job_s"], 2)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--new", type=int, default=100)
    parser.add_argument("--throughput", type=int, default=1000)
    parser.add_argument("--baseline", default="d68a90e", help="commit of the JSON-ledger labelling job")
    parser.add_argument("--nights", type=int, default=0, help="phase 3 only: a table of this many nights")
    parser.add_argument("--per-night", type=int, default=5, help="phase 3: stacks per night")
    args = parser.parse_args()
    if args.nights:
        print(json.dumps(nights(args), indent=2))
        return
    import ray

    results: dict = {"machine": f"{os.cpu_count()} cores, CPU only"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        seed_src = make_archive(tmp / "seed", args.new)
        ray.init(include_dashboard=False, log_to_driver=False)
        big = tmp / "big"
        results["table_rows_before"] = grow_table(big, args.rows, args.new, seed_src)
        ray.shutdown()
        times = {"empty": [], "grown": []}
        for k in range(2):
            new = make_archive(tmp / f"new{k}", args.new)
            (new / "part000.h5").rename(new / f"night{k}.h5")  # another unit name than the seed's
            times["empty"].append(run_job(new, tmp / f"empty{k}", ROOT, {"settle": 0})["seconds"])
            times["grown"].append(run_job(new, big, ROOT, {"settle": 0})["seconds"])
        results["seconds_into_empty"] = [round(t, 1) for t in times["empty"]]
        results[f"seconds_into_{args.rows}"] = [round(t, 1) for t in times["grown"]]
        results["grown_over_empty"] = round(statistics.median(times["grown"]) / statistics.median(times["empty"]), 3)

        if args.throughput:
            many = make_archive(tmp / "many", args.throughput)
            worktree = tmp / "baseline"
            subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.baseline], cwd=ROOT,
                           check=True, capture_output=True)
            model = str(worktree / "raypipe" / "weights" / "raypipe-small.safetensors")  # one model for both
            try:
                new_run = run_job(many, tmp / "t-new", ROOT, {"settle": 0, "model": model})
                old_run = run_job(many, tmp / "t-old", worktree, {"model": model})
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, capture_output=True)
            results[f"stacks_per_s_{args.throughput}_table"] = round(new_run["rows"] / new_run["seconds"], 2)
            results[f"stacks_per_s_{args.throughput}_ledger_{args.baseline}"] = round(
                old_run["rows"] / old_run["seconds"], 2)
            results["table_over_ledger"] = round((new_run["rows"] / new_run["seconds"])
                                                 / (old_run["rows"] / old_run["seconds"]), 3)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
