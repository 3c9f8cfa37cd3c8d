"""The Ray Train job: a short CPU run with checkpoints, a killed worker survived, resume by run name."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from raypipe.model.inference import load_model
from raypipe.pipelines.train import TrainConfig, train
from raypipe.resources import EXAMPLES

SAMPLE = EXAMPLES / "sim-sample"


def _kill_a_worker_after_first_checkpoint(run: Path, killed: list[int]) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "checkpoint_manager_snapshot.json").exists():  # registered
        time.sleep(0.5)
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"RayTrainWorker" in cmdline.read_bytes():
                pid = int(cmdline.parent.name)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        except (OSError, ProcessLookupError):
            continue


@pytest.mark.slow
def test_training_survives_a_killed_worker_and_resumes(ray_cluster, tmp_path):
    cfg = TrainConfig(data_uri=str(SAMPLE), storage_path=str(tmp_path), run_name="t1", num_workers=2,
                      batch_size=2, steps=8, checkpoint_every=2, val_every=4, val_samples=3, log_every=2,
                      cache_data=True, augment={"rotation": 10.0})
    killed: list[int] = []
    killer = threading.Thread(target=_kill_a_worker_after_first_checkpoint, args=(tmp_path / "t1", killed))
    killer.start()
    result = train(cfg)
    killer.join()
    assert killed, "no Ray Train worker process was found to kill"
    assert result.error is None and result.metrics["step"] == 8
    log = [json.loads(line) for line in (tmp_path / "t1" / "metrics.jsonl").read_text().splitlines()]
    assert any("resumed from checkpoint" in m.get("event", "") for m in log)
    assert [m["step"] for m in log if "val_total" in m][-1] == 8
    assert (tmp_path / "t1" / "metrics.png").stat().st_size > 1000
    model = load_model(tmp_path / "t1" / "model.safetensors", device="cpu")
    assert model.name == "t1" and model.config.ngf == 16

    # the same run name resumes from step 8; more steps continue the run
    cfg.steps = 10
    again = train(cfg)
    assert again.metrics["step"] == 10
    log = [json.loads(line) for line in (tmp_path / "t1" / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 8, "event": "resumed from checkpoint at step 8"} in log


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="multiple of checkpoint_every"):
        TrainConfig(data_uri="x", storage_path="y", run_name="z", checkpoint_every=3, val_every=4).check()
    path = tmp_path / "c.yaml"
    path.write_text("data_uri: d\nstorage_path: s\nrun_name: r\nsteps: 5\n")
    assert TrainConfig.from_file(path, steps=7).steps == 7


@pytest.mark.slow
def test_gpu_recipe_dry_run_on_this_machine(tmp_path):
    """jobs/gpu: conformers prepared with RDKit here, then simulation (ppafm, PoCL) and the plain loop in
    one budgeted command without Ray, RDKit or Ray's imports — what a lent GPU machine runs."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    prep = subprocess.run([sys.executable, "jobs/gpu/prepare.py", "--limit", "12", "--no-wheels", "--out",
                           str(tmp_path / "gpu")], cwd=root, capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr
    blocker = tmp_path / "sitecustomize.py"  # the device has neither RDKit nor Ray: make sure nothing needs them
    blocker.write_text("import builtins\n_real = builtins.__import__\n"
                       "def _guard(name, *a, **k):\n"
                       "    if name.split('.')[0] in ('rdkit', 'ray'):\n"
                       "        raise ImportError('not on the device: ' + name)\n"
                       "    return _real(name, *a, **k)\n"
                       "builtins.__import__ = _guard\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{root}"}
    run = subprocess.run([sys.executable, "jobs/gpu/run.py", "--molecules", str(tmp_path / "gpu" / "molecules.jsonl.gz"),
                          "--device", "cpu", "--opencl", "pocl", "--seconds", "45", "--limit", "3", "--workers", "1",
                          "--min-stacks", "4", "--init-from", "", "--work", str(tmp_path / "work"),
                          "--out", str(tmp_path / "out")], cwd=root, capture_output=True, text=True, timeout=400, env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu-run.json").read_text())
    assert report["stacks_simulated"] >= 4 and report["steps"] >= 1 and "Portable Computing Language" in report["opencl"]
    assert load_model(tmp_path / "out" / "last.safetensors", device="cpu").config.head == "palette"
