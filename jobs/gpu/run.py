"""Train on a lent GPU machine in one command: ppafm simulates on the GPU's OpenCL (or the machine's CPUs)
while the plain torch loop trains on CUDA, both until a wall-clock budget; results go to ``--out``.

    python3 jobs/gpu/run.py --seconds 480 --out "$OUT"          # on the device (see the README)
    python jobs/gpu/run.py --device cpu --seconds 60 --limit 4 --out /tmp/g   # a dry run here

No Ray and no RDKit there: molecules come prepared (``jobs/gpu/prepare.py`` -> ``.gpu/molecules.jsonl.gz``),
simulation workers (processes, one OpenCL context each) write Parquet shards under ``--work`` while
``raypipe.training.loop.train_local`` trains from the shards already written (each pass lists them again).
Validation there is by pixel error (graph extraction needs RDKit); evaluate the returned model here.

Back in ``--out``: ``model.safetensors`` (best by validation), ``last.safetensors`` (the generator at the
end, to continue with ``init_from``), ``metrics.jsonl``, ``metrics.png``, ``gpu-run.json`` (OpenCL platform,
stacks simulated and stacks/s, training samples/s, steps).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

NVIDIA_OPENCL = ("/usr/local/nvidia/lib64/libnvidia-opencl.so.1", "/usr/lib/x86_64-linux-gnu/libnvidia-opencl.so.1",
                 "/usr/lib64/libnvidia-opencl.so.1")


def setup_opencl(kind: str) -> str:
    """Make NVIDIA's OpenCL driver visible to pyopencl's ICD loader (``auto``/``nvidia``), or use what is
    installed (``pocl``); returns a description of the platform found, or raises RuntimeError."""
    if kind in ("auto", "nvidia"):
        found = [p for p in NVIDIA_OPENCL if os.path.exists(p)] + glob.glob("/usr/local/nvidia/lib*/libnvidia-opencl.so*")
        if found:
            vendors = Path("/tmp/raypipe-opencl-vendors")
            vendors.mkdir(exist_ok=True)
            (vendors / "nvidia.icd").write_text(found[0] + "\n")
            os.environ["OCL_ICD_VENDORS"] = str(vendors)
        elif kind == "nvidia":
            raise RuntimeError("no libnvidia-opencl.so on this machine: NVIDIA's OpenCL driver is not mounted")
    import pyopencl as cl

    platforms = cl.get_platforms()
    if not platforms:
        raise RuntimeError("pyopencl finds no OpenCL platform")
    return "; ".join(f"{p.name}: {', '.join(d.name for d in p.get_devices())}" for p in platforms)


def simulate_worker(worker: int, workers: int, molecules: str, work: str, spec: str, seed: int, deadline: float,
                    opencl: str, density: int, jitter: float) -> None:
    """Simulate every ``workers``-th molecule from ``worker`` on, 16 molecules per shard, until the deadline."""
    setup_opencl(opencl)
    from raypipe.chem.molecule import Molecule
    from raypipe.simulation.ppm import SimulationSettings, Simulator
    from raypipe.simulation.shards import molecule_rows, rows_to_table, table_bytes
    from raypipe.storage import filesystem, write_bytes_atomic

    simulator = Simulator(SimulationSettings(pix_per_angstrom=density, distance_jitter=jitter))
    fs, base = filesystem(work)
    with gzip.open(molecules, "rt") as f:
        records = [json.loads(line) for k, line in enumerate(f) if k % workers == worker]
    rows, shard = [], 0
    for k, record in enumerate(records):
        if time.time() > deadline:
            break
        rows += molecule_rows(Molecule.from_record(record), record["id"], spec, seed, simulator)
        if len(rows) >= 64 or k == len(records) - 1:
            write_bytes_atomic(fs, f"{base}/shards/shard-{worker:02d}{shard:05d}.parquet",
                               table_bytes(rows_to_table(rows, simulator)))
            rows, shard = [], shard + 1


def count_rows(work: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in (work / "shards").glob("shard-*.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", default=str(ROOT / ".gpu" / "molecules.jsonl.gz"))
    parser.add_argument("--config", default=str(ROOT / "jobs" / "configs" / "train-gpu.yaml"))
    parser.add_argument("--init-from", default=None, help="continue this model (default: the config's)")
    parser.add_argument("--seconds", type=float, default=480, help="wall-clock budget for the whole run")
    parser.add_argument("--work", default="/tmp/raypipe-gpu")
    parser.add_argument("--out", required=True)
    parser.add_argument("--workers", type=int, default=4, help="simulation processes")
    parser.add_argument("--opencl", choices=["auto", "nvidia", "pocl"], default="auto")
    parser.add_argument("--parameter-sets", default="random:4")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--limit", type=int, default=None, help="only the first N molecules (dry runs)")
    parser.add_argument("--min-stacks", type=int, default=256, help="stacks simulated before training starts")
    args = parser.parse_args()
    start = time.time()
    deadline = start + args.seconds
    work, out = Path(args.work), Path(args.out)
    shutil.rmtree(work, ignore_errors=True)
    (work / "shards").mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    molecules = args.molecules
    if args.limit:
        molecules = str(work / "molecules.jsonl.gz")
        with gzip.open(args.molecules, "rt") as f, gzip.open(molecules, "wt") as g:
            for k, line in enumerate(f):
                if k >= args.limit:
                    break
                g.write(line)
    report: dict = {"opencl": setup_opencl(args.opencl), "device": args.device}
    print(f"gpu-run: OpenCL {report['opencl']}", flush=True)

    sim_deadline = deadline - 0.3 * args.seconds  # the last 30 %: training only
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=simulate_worker, args=(k, args.workers, molecules, str(work), args.parameter_sets, 0,
                                                          sim_deadline, args.opencl, 8, 0.3), daemon=True)
               for k in range(args.workers)]
    for w in workers:
        w.start()
    while count_rows(work) < args.min_stacks and time.time() < sim_deadline and any(w.is_alive() for w in workers):
        time.sleep(2)
    report["stacks_before_training"] = count_rows(work)
    report["seconds_to_first_training"] = round(time.time() - start, 1)

    from raypipe.training.loop import train_local
    from raypipe.training.run import TrainConfig

    cfg = TrainConfig.from_file(args.config, data_uri=str(work), storage_path=str(work / "runs"), device=args.device,
                                init_from=args.init_from, max_seconds=max(10.0, deadline - time.time() - 15))
    if cfg.init_from and not os.path.isabs(cfg.init_from):
        cfg.init_from = str(ROOT / cfg.init_from)
    result = train_local(cfg)
    for w in workers:
        w.terminate()
    report["stacks_simulated"] = count_rows(work)
    report["simulation_stacks_per_s"] = round(report["stacks_simulated"] / max(1.0, min(time.time(), sim_deadline) - start), 2)
    run = work / "runs" / cfg.run_name
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    rates = [m["samples_per_s"] for m in log if "samples_per_s" in m]
    report.update({"steps": result.get("step"), "best": result.get("best"),
                   "train_samples_per_s": round(sum(rates) / len(rates), 1) if rates else None,
                   "seconds": round(time.time() - start, 1)})
    for name in ("model.safetensors", "metrics.jsonl", "metrics.png"):
        if (run / name).exists():
            shutil.copy(run / name, out / name)
    import torch

    from raypipe.model.files import save_model
    from raypipe.training.pix2pix import Pix2Pix
    from raypipe.training.run import RunState

    latest = (run / "checkpoints" / "LATEST").read_text().strip()
    _, saved = RunState.restore(run / "checkpoints" / latest, "cpu")
    model = Pix2Pix(cfg.model_config(), "cpu")
    model.load_state_dict(saved)
    save_model(model.generator, cfg.model_config(), out / "last.safetensors", name=cfg.run_name,
               notes={"step": result.get("step"), "hardware": "lent GPU", "data": "jobs/gpu/run.py"})
    (out / "gpu-run.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str), flush=True)
    del torch


if __name__ == "__main__":
    main()
