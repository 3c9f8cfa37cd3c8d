"""A real multi-node Ray cluster on this machine: the nightly job (and a training job) survive losing a node.

    python bench/multinode.py [--stacks 120] [--kill-after 15] [--train] [--library 512]

Starts a Ray head and two worker nodes as separate ``ray start`` processes on 127.0.0.1, each with its own
temp folder and agent ports as if on its own machine (the head with no CPUs for work; worker ``a`` with a
custom ``inference`` resource; worker ``b`` with a ``spare`` one),
submits ``jobs/label.py`` with ``ray job submit``, kills worker b's raylet (SIGKILL) ``--kill-after``
seconds into the job, waits for the job and checks the labels table: every stack exactly once. With
``--train`` it does the same to a short Ray Train job (2 workers, checkpoints every few steps): the job
must finish at its last step, resumed from a checkpoint. With ``--library N`` it builds a library of the
first N catalogue molecules on the cluster (``jobs/library.py build``, features only, shards of 32) on a fresh
node, killed once the first shards are written: every molecule must be in the library once, and the
report gives the build's molecules a second. Everything it started is torn down by the
process ids of this cluster (its GCS port), never ``ray stop`` (other Ray sessions on the machine are
left alone). Prints one JSON report.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_label import make_archive  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ours(gcs_port: int) -> list[int]:
    """PIDs of the processes of the cluster whose GCS listens on ``gcs_port``."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f":{gcs_port}" in text or f"gcs_server_port={gcs_port}" in text or f"--port {gcs_port}" in text:
            pids.append(int(cmdline.parent.name))
    return [p for p in pids if p != os.getpid()]


def raylet_with(resource: str, gcs_port: int) -> int | None:
    for pid in ours(gcs_port):
        try:
            text = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "/raylet " in text or text.split(" ")[0].endswith("raylet"):
            if f"{resource}," in text:
                return pid
    return None


def kill_node(resource: str, gcs_port: int, started: float) -> float | None:
    """SIGKILL the raylet of the node holding ``resource``; seconds since ``started`` (None: none found)."""
    victim = raylet_with(resource, gcs_port)
    if victim is None:
        return None
    os.kill(victim, signal.SIGKILL)
    return round(time.time() - started, 1)


def start(args: list[str], env: dict) -> None:
    # every node's agents on ports of their own: several nodes (and other Ray sessions) share this machine,
    # and an agent that loses a port race leaves its node unable to take jobs ("No available agent")
    ports = [f"--{name}={free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                     "metrics-export-port", "runtime-env-agent-port")]
    done = subprocess.run([RAY, "start", *args, *ports], capture_output=True, text=True, env=env, timeout=180)
    if done.returncode:
        raise RuntimeError(f"ray start {' '.join(args)} failed: {done.stderr[-2000:]}")


def submit(dashboard: int, entrypoint: list[str], env: dict, patience: float = 180) -> str:
    deadline = time.time() + patience
    while True:  # the job agents come up a while after `ray start` returns, slowly on a loaded machine
        done = subprocess.run([RAY, "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--no-wait",
                               "--working-dir", str(ROOT), "--", *entrypoint], capture_output=True, text=True,
                              env=env, timeout=300, cwd=ROOT)
        if done.returncode == 0 or "No available agent" not in done.stdout + done.stderr or time.time() > deadline:
            break
        time.sleep(5)
    if done.returncode:
        raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
    return next(w.strip("'\"") for w in done.stdout.split() if w.strip("'\"").startswith("raysubmit_"))


def status(dashboard: int, job: str, env: dict) -> str:
    done = subprocess.run([RAY, "job", "status", "--address", f"http://127.0.0.1:{dashboard}", job],
                          capture_output=True, text=True, env=env, timeout=60)
    text = (done.stdout + done.stderr).lower()  # "Job 'raysubmit_…' succeeded", on either stream
    for word in ("succeeded", "failed", "stopped", "running", "pending"):
        if word in text:
            return word.upper()
    return "UNKNOWN"


def logs(dashboard: int, job: str, env: dict) -> str:
    return subprocess.run([RAY, "job", "logs", "--address", f"http://127.0.0.1:{dashboard}", job],
                          capture_output=True, text=True, env=env, timeout=60).stdout


def wait(dashboard: int, job: str, env: dict, timeout: float) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = status(dashboard, job, env)
        if state in ("SUCCEEDED", "FAILED", "STOPPED"):
            return state
        time.sleep(3)
    return "TIMEOUT"


def library_build(dashboard: int, gcs: int, env: dict, tmp: Path, n: int) -> dict:
    """A library build on the cluster, with a fresh node killed once its first shards are written."""
    start(["--address", f"127.0.0.1:{gcs}", "--temp-dir", str(tmp / "n4"), "--node-ip-address", "127.0.0.1",
           "--num-cpus", "2", "--resources", '{"spare3": 1}'], env)
    out = tmp / "library"
    catalogue = ROOT / "raypipe" / "chem" / "data" / "training_molecules.csv.gz"
    job = submit(dashboard, [sys.executable, "jobs/library.py", "build", str(catalogue), "--out", str(out),
                             "--limit", str(n), "--shard-size", "32"], env)
    started = time.time()
    while len(list((out / "shards").glob("shard-*.parquet"))) < 2 and time.time() - started < 600:
        time.sleep(0.5)
    killed_at = kill_node("spare3", gcs, started)
    state = wait(dashboard, job, env, 1500)
    seconds = time.time() - started
    result = {"job": state, "molecules_asked": n, "node_killed": "fresh worker (raylet)", "killed_after_s": killed_at,
              "job_seconds": round(seconds, 1)}
    if state == "SUCCEEDED":
        from raypipe.identify.library import Library

        library = Library.open(str(out))
        rejects = json.loads((out / "manifest.json").read_text())["rejects"]
        result.update(rows=len(library), refused=rejects, distinct=len(set(library.smiles.tolist())),
                      complete=len(library) + rejects == n, molecules_per_s=round(n / seconds, 1))
    else:
        result["log_tail"] = logs(dashboard, job, env)[-3000:]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stacks", type=int, default=120)
    parser.add_argument("--kill-after", type=float, default=15.0)
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--library", type=int, default=0, help="also build a library of this many molecules")
    parser.add_argument("--stall-timeout", type=float, default=120.0,
                        help="the label job's --stall-timeout: how soon it re-plans after losing the node")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still tears the cluster down (finally)
    gcs, dashboard = free_port(), free_port()
    from raypipe.pipelines.cluster import LOCAL_RAY_ENV

    # the nodes get the environment raypipe gives the Ray it starts (the worker pool also in k8s/settings.env)
    env = {**LOCAL_RAY_ENV, **os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}
    env.pop("RAY_ADDRESS", None)
    report: dict = {"nodes": ["head (0 CPU)", "worker a (2 CPU, inference)", "worker b (2 CPU, spare)"]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "scans"
        make_archive(src, args.stacks)
        for k, part in enumerate(sorted(src.glob("*.h5"))):  # spread the work over several units
            part.rename(src / f"night-{k:03d}.h5")
        try:
            # each node its own temp dir (its session folder, sockets, runtime-env files), as on separate
            # machines: with one shared folder, a node's runtime-env cleanup deleted the job's working dir
            start(["--head", "--temp-dir", str(tmp / "n0"), "--port", str(gcs), "--node-ip-address", "127.0.0.1",
                   "--num-cpus", "0",
                   "--dashboard-port", str(dashboard),
                   "--include-dashboard", "true", "--dashboard-host", "127.0.0.1"], env)
            for k, resources in enumerate(('{"inference": 1}', '{"spare": 1}'), start=1):
                start(["--address", f"127.0.0.1:{gcs}", "--temp-dir", str(tmp / f"n{k}"), "--node-ip-address",
                       "127.0.0.1", "--num-cpus", "2",
                       "--resources", resources], env)
            out = tmp / "labels"
            job = submit(dashboard, [sys.executable, "jobs/label.py", str(src), "--out", str(out), "--settle", "0",
                                     "--stall-timeout", str(args.stall_timeout)], env)
            started = time.time()
            while time.time() - started < args.kill_after and status(dashboard, job, env) in ("PENDING", "RUNNING"):
                time.sleep(1)
            killed_at = kill_node("spare", gcs, started)
            state = wait(dashboard, job, env, 1200)
            from raypipe.labels.table import read_labels

            rows = read_labels(str(out), columns=["unit", "source", "status"]).to_pylist() if state == "SUCCEEDED" else []
            keys = [(r["unit"], r["source"]) for r in rows]
            report["label"] = {"job": state, "stacks_expected": args.stacks, "rows_written": len(rows),
                               "distinct": len(set(keys)), "duplicates": len(keys) - len(set(keys)),
                               "ok": sum(r["status"] == "ok" for r in rows), "node_killed": "worker b (raylet)",
                               "killed_after_s": killed_at, "job_seconds": round(time.time() - started, 1)}
            if state != "SUCCEEDED":
                report["label"]["log_tail"] = logs(dashboard, job, env)[-3000:]
            if args.train:
                # worker b is gone: bring a fresh node back for the training job, then kill it mid-run
                start(["--address", f"127.0.0.1:{gcs}", "--temp-dir", str(tmp / "n3"), "--node-ip-address",
                       "127.0.0.1", "--num-cpus", "2", "--resources", '{"spare2": 1}'], env)
                # as the README advises for small clusters: workers that leave CPUs for Ray Data's reads, also
                # on the nodes left after a loss (1 CPU workers would hold all of worker a's 2: a deadlock)
                config = tmp / "train.yaml"
                config.write_text((ROOT / "jobs/configs/train-small-cpu.yaml").read_text() + "cpus_per_worker: 0.5\n")
                job = submit(dashboard, [sys.executable, "jobs/train.py", "--config", str(config),
                                         "--run-name", "multinode", "--storage-path", str(tmp / "runs"),
                                         "--steps", "40"], env)
                started = time.time()
                while not list((tmp / "runs" / "multinode").glob("checkpoint_*")) and time.time() - started < 600:
                    time.sleep(2)
                killed_at = kill_node("spare2", gcs, started)
                state = wait(dashboard, job, env, 1500)
                text = logs(dashboard, job, env)
                log = tmp / "runs" / "multinode" / "metrics.jsonl"
                metrics = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
                report["train"] = {"job": state, "node_killed": "fresh worker (raylet)",
                                   "killed_after_s": killed_at,
                                   "last_step": max((m["step"] for m in metrics), default=None),
                                   "resumed": any("resumed" in m.get("event", "") for m in metrics),
                                   "job_seconds": round(time.time() - started, 1)}
                if state != "SUCCEEDED":
                    report["train"]["log_tail"] = text[-3000:]
            if args.library:
                report["library"] = library_build(dashboard, gcs, env, tmp, args.library)
        finally:
            pids = ours(gcs)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            report["torn_down_pids"] = len(pids)
            print(json.dumps(report, indent=2), flush=True)  # also when stopped early (SIGTERM)
            current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"  # written by our `ray start`
            if current.exists() and current.read_text().strip().endswith(f":{gcs}"):
                current.unlink()


if __name__ == "__main__":
    main()
