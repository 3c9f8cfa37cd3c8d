"""Batch labelling: end-to-end stacks per second vs a bare loop over the same model and data, and peak
memory of the whole Ray session for a small and a 10x larger archive.

Usage: python bench/bench_label.py [--sizes 100,1000,10000] [--compare 1000] [--repeat 3] [--model FILE] [--views N]
                                  [--trace FOLDER]

The archives are made from the bundled sample stacks (each copy with its own noise, so every stack is
distinct), 100 stacks per HDF5 file. The bare loop runs in this process with every core on the
``--compare`` archive. Each pipeline size runs in a child process of its own with a fresh local Ray on
the same cores (as the nightly job is one process per night): a warm-up labelling of the smallest archive
(workers started, model file cached), then the measured ones, each once the earlier run's inference actor
has exited (Ray Data kills it asynchronously: a run started at once counts both actors). The ``--compare`` size is labelled once
without the memory sampler: the speed compared with the bare loop, which runs unsampled too (the sampler
costs ~10 % of a 2-core machine's CPU); with ``--repeat N`` the bare loop and that unsampled run alternate N
times (each pipeline run in a fresh child) and the ratio reported is the median of the N pairs' ratios, since
runs of the same code differ by about +-7 %. Then every size is labelled with the sampler: the summed
proportional resident memory (PSS) of the child and all its descendants (GCS, raylet, workers), every
0.2 s; the peak's largest processes are reported by name, the sampler's own CPU share and how many Ray worker
processes were started during the run (each pays its imports: ~1 s of CPU, ~200 MiB), and the peak by
kind of page (``Anon``: heaps; ``File``: libraries; ``Shmem``: the object store's pages). ``--trace FOLDER``
writes each sampled run's memory by process every 5 s (``SIZE.jsonl``): where a run's memory grows, and when.
``--repeat 0`` measures memory only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from raypipe.scans.archive import read_archive, write_archive
from raypipe.scans.stack import ScanStack
from raypipe.resources import EXAMPLES

TRACE_EVERY_S = 5.0  # --trace: one line of per-process memory this often
SAMPLE_EVERY_S = 0.2  # memory samples: one costs ~17-50 ms of CPU (smaps_rollup of every process)
SAMPLE = EXAMPLES / "scans" / "sample_scans.h5"


def make_archive(folder: Path, n: int) -> Path:
    base = list(read_archive(SAMPLE))
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for start in range(0, n, 100):
        stacks = []
        for k in range(start, min(start + 100, n)):
            src = base[k % len(base)]
            noisy = src.images + rng.normal(0, 0.05 * float(src.images.std()), src.images.shape).astype(np.float32)
            stacks.append(ScanStack(noisy, src.heights, dict(src.metadata, name=f"s{k:05d}"), scan_id=f"s{k:05d}"))
        write_archive(folder / f"part{start // 100:03d}.h5", stacks)
    return folder


def bare_loop(folder: Path, model_path: str | None) -> float:
    from raypipe.chem.depiction import encode_png
    from raypipe.model.inference import load_model
    from raypipe.model.reading import read_prediction
    from raypipe.scans.preprocess import preprocess

    model = load_model(model_path, device="cpu")
    start, n = time.perf_counter(), 0
    for path in sorted(folder.glob("*.h5")):
        stacks = list(read_archive(path))
        for k in range(0, len(stacks), 16):
            batch = stacks[k:k + 16]
            prediction = model.infer(np.stack([preprocess(s) for s in batch]))
            read_prediction(prediction, model.config.window, model.calibration)  # what the pipeline reads
            for depiction in prediction.depictions:
                encode_png(depiction)
                n += 1
    return n / (time.perf_counter() - start)


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


KINDS = ("Pss_Anon:", "Pss_File:", "Pss_Shmem:")  # the heap, mapped files (libraries), the object store


def _memory_of_session() -> tuple[int, dict[str, int], dict[str, int]]:
    """Bytes: this process and its descendants (the local Ray it started, not other Ray sessions), the
    same summed by process title, and by kind of page (``KINDS``, where the kernel reports them)."""
    total, by_name, by_kind = 0, {}, {}
    for pid in _descendants(os.getpid()):
        status = Path("/proc") / str(pid)
        try:
            rollup = status / "smaps_rollup"
            text = rollup.read_text() if rollup.exists() else (status / "status").read_text()
            key = "Pss:" if "Pss:" in text else "VmRSS:"
            fields = {line.split()[0]: int(line.split()[1]) * 1024 for line in text.splitlines()
                      if line.startswith((key, *KINDS))}
            size = fields[key]
            name = (status / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except (OSError, KeyError, IndexError, ValueError):
            continue
        for kind in KINDS:
            if kind in fields:
                by_kind[kind[4:-1]] = by_kind.get(kind[4:-1], 0) + fields[kind]
        name = name if name.startswith("ray::") else Path(name).name
        if name.startswith("ray::"):
            _WORKERS_SEEN.add(pid)
        if "DepictionPredictor" in name:
            _PREDICTOR_PIDS.add(pid)
        elif pid in _PREDICTOR_PIDS:
            name += " (an inference actor exiting)"
        total += size
        by_name[name] = by_name.get(name, 0) + size
    return total, by_name, by_kind


def pipeline(folder: Path, model_path: str | None, sample: bool = True,
             trace: Path | None = None) -> tuple[float, int, dict[str, int], float, int, dict[str, int]]:
    """Labels ``folder``: stacks/s and, with ``sample``, the peak memory, its largest processes, the
    sampler's share of the machine's CPU (~10 % on 2 cores: the compared speed is measured unsampled) and
    the peak by kind of page. With ``trace``, a line of JSON every ``TRACE_EVERY_S`` there: seconds,
    total and each process title's MiB (where memory grows over a run, not only at its peak)."""
    from raypipe.pipelines.predict import predict_dataset

    peak, stop, cost = [0, {}, {}], threading.Event(), [0.0]

    def sampler_loop() -> None:
        begun, traced = time.perf_counter(), -TRACE_EVERY_S
        with open(trace, "w") if trace else contextlib.nullcontext() as log:
            while not stop.is_set():
                total, by_name, by_kind = _memory_of_session()
                if total > peak[0]:
                    peak[:] = [total, by_name, by_kind]
                now = time.perf_counter() - begun
                if log and now - traced >= TRACE_EVERY_S:
                    traced = now
                    log.write(json.dumps({"s": round(now, 1), "MiB": round(total / 2**20),
                                          **{k: round(v / 2**20) for k, v in by_kind.items()},
                                          "by_process": {k: round(v / 2**20) for k, v in by_name.items()}}) + "\n")
                    log.flush()
                stop.wait(SAMPLE_EVERY_S)
        cost[0] = time.thread_time()

    sampler = threading.Thread(target=sampler_loop)
    if sample:
        sampler.start()
    known = set(_descendants(os.getpid()))
    start, n = time.perf_counter(), 0
    for batch in predict_dataset(str(folder), model=model_path).iter_batches(batch_size=64):
        if not n:
            _predictor_pids()  # remember the actor's process while it is titled as one (once a run)
        n += len(batch["status"])
    seconds = time.perf_counter() - start
    if sample:
        stop.set()
        sampler.join()
    started = len(_WORKERS_SEEN - known)  # worker processes started during the run (sampled runs)
    return n / seconds, peak[0], peak[1], cost[0] / (seconds * (os.cpu_count() or 1)), started, peak[2]


_WORKERS_SEEN: set[int] = set()  # Ray worker processes the memory sampler has seen
_PREDICTOR_PIDS: set[int] = set()  # inference actors' processes seen in this session's runs


def _predictor_pids() -> set[int]:
    """The processes of this session now titled as an inference actor (remembered: a killed actor's
    process is retitled ``ray::IDLE`` while it exits, with its memory still resident)."""
    found = set()
    for pid in _descendants(os.getpid()):
        try:
            if b"DepictionPredictor" in (Path("/proc") / str(pid) / "cmdline").read_bytes():
                found.add(pid)
        except OSError:
            continue
    _PREDICTOR_PIDS.update(found)
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_for_actors_to_exit(timeout_s: float = 60.0) -> float:
    """Seconds until no inference actor of an earlier run is alive in this session: Ray Data kills a
    finished run's actor pool asynchronously, and a run started at once overlaps the old actor's exit
    with the new one's model load (measured: both at once, ~550 + ~340 MiB, in a peak). Waits for every
    process that was ever an inference actor here, whatever its title now."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        _predictor_pids()
        if not any(_alive(pid) for pid in _PREDICTOR_PIDS):
            break
        time.sleep(0.2)
    return time.perf_counter() - start


def child(folder: Path, warm: Path, model_path: str | None, speed_run: bool, sampled: bool = True,
          trace: Path | None = None) -> dict:
    """One size in this process: a fresh local Ray, a warm-up on ``warm``, then ``folder`` labelled with
    the memory sampler (unless not ``sampled``) and, with ``speed_run``, first once without it (the speed
    compared with the bare loop)."""
    from raypipe.pipelines.cluster import ensure_ray

    ensure_ray()  # as the label job starts its local Ray
    pipeline(warm, model_path, sample=False)
    speed = {}
    if speed_run:
        _wait_for_actors_to_exit()
        start = time.perf_counter()
        rate = pipeline(folder, model_path, sample=False)[0]
        speed = {"stacks_per_s_unsampled": round(rate, 2), "seconds_unsampled": round(time.perf_counter() - start, 1)}
    if not sampled:
        return speed
    waited = _wait_for_actors_to_exit()
    start = time.perf_counter()
    rate, memory, by_name, share, started, by_kind = pipeline(folder, model_path, trace=trace)
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:6]
    return {**speed, "stacks_per_s": round(rate, 2), "seconds": round(time.perf_counter() - start, 1),
            "memory_sampler_cpu_share": round(share, 4), "waited_for_earlier_actor_s": round(waited, 1),
            "peak_session_memory_MiB": round(memory / 2**20), "ray_worker_processes_started": started,
            "peak_by_process_MiB": {name: round(size / 2**20) for name, size in top},
            "peak_by_kind_MiB": {kind: round(size / 2**20) for kind, size in by_kind.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1000,10000", help="archive sizes the pipeline labels")
    parser.add_argument("--compare", type=int, default=1000, help="the size the bare loop also runs on")
    parser.add_argument("--repeat", type=int, default=3,
                        help="bare loop / unsampled pipeline pairs on the --compare size (the median ratio is "
                             "reported; 0: memory only, no speed comparison)")
    parser.add_argument("--model", default=None, help="model file (default: the shipped model)")
    parser.add_argument("--views", type=int, default=1,
                        help="test-time views of the model, for both the bare loop and the pipeline (a copy of "
                             "the model file with these; 1: one network pass a stack, as the figures of earlier "
                             "sessions; 0: the model file's own)")
    parser.add_argument("--out", type=Path, default=Path("out/bench-label.json"))
    parser.add_argument("--trace", type=Path, default=None,
                        help="a folder: each sampled run writes SIZE.jsonl there, the memory of every process "
                             "every %g s (where it grows over a run)" % TRACE_EVERY_S)
    parser.add_argument("--child", nargs=2, type=Path, metavar=("ARCHIVE", "WARMUP"), help=argparse.SUPPRESS)
    parser.add_argument("--speed-run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--unsampled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.model, args.speed_run, not args.unsampled,
                               args.trace)))
        return

    sizes = sorted({int(v) for v in args.sizes.split(",")} | {args.compare})
    result: dict = {"machine": f"{os.cpu_count()} cores, CPU only", "pipeline": {}}
    with tempfile.TemporaryDirectory() as tmp:
        if args.views:
            from raypipe.model.files import rewrite_model

            args.model = str(rewrite_model(args.model, Path(tmp) / "model.safetensors", views=args.views))
        result["views"] = args.views or "the model's own"
        archives = {n: make_archive(Path(tmp) / str(n), n) for n in sizes}

        def run_child(n: int, *flags: str) -> dict:
            command = [sys.executable, __file__, "--child", str(archives[n]), str(archives[sizes[0]]), *flags]
            if args.model:
                command += ["--model", args.model]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            return json.loads(done.stdout.strip().splitlines()[-1])

        pairs = []  # (bare loop, unsampled pipeline) on the --compare archive, alternating
        for _ in range(args.repeat):
            bare = bare_loop(archives[args.compare], args.model)
            speed = run_child(args.compare, "--speed-run", "--unsampled")["stacks_per_s_unsampled"]
            pairs.append((round(bare, 2), speed))
            print("bare loop / pipeline", pairs[-1], flush=True)
        if args.trace:
            args.trace.mkdir(parents=True, exist_ok=True)
        for n in sizes:
            trace = ["--trace", str(args.trace / f"{n}.jsonl")] if args.trace else []
            result["pipeline"][n] = run_child(n, *trace)
            print(n, result["pipeline"][n], flush=True)
    first, last = result["pipeline"][sizes[0]], result["pipeline"][sizes[-1]]
    if pairs:
        bare = float(np.median([b for b, _ in pairs]))
        result["pipeline"][args.compare]["stacks_per_s_unsampled"] = float(np.median([p for _, p in pairs]))
        result.update({
            "bare_loop_stacks_per_s": round(bare, 2), "bare_loop_stacks": args.compare,
            "speed_pairs": pairs,
            "pipeline_vs_bare_loop": round(float(np.median([p / b for b, p in pairs])), 3),
            "pipeline_vs_bare_loop_each": [round(p / b, 3) for b, p in pairs],
            "pipeline_sampled_vs_bare_loop": round(result["pipeline"][args.compare]["stacks_per_s"] / bare, 3),
        })
    result.update({
        "memory_growth_smallest_to_largest": round(last["peak_session_memory_MiB"] / first["peak_session_memory_MiB"]
                                                   - 1, 3),
        "rate_largest_vs_compare": round(last["stacks_per_s"] / result["pipeline"][args.compare]["stacks_per_s"], 3),
    })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
