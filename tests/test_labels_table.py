"""The labels table: nothing lost, nothing duplicated, no poison file stalls the night (issue 16).

Each test reproduces one fault an operator meets: overlapping runs, a kill followed by new arrivals,
half-copied input, poison files, secrets in URIs, a bad run date; and the PostgreSQL catalog.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import image_folder, once_each, png_header_only, rows_of
from raypipe.errors import ScanError
from raypipe.model.config import ModelConfig
from raypipe.model.files import save_model
from raypipe.model.networks import define_G

ROOT = Path(__file__).resolve().parents[1]


# --- poison files: every reader checks before it allocates ------------------------------------------
def test_poison_files_are_refused_before_reading(tmp_path):
    from raypipe import load_stack
    from raypipe.scans.archive import FORMAT

    bomb = tmp_path / "bomb.h5"  # 7 KB on disk, declares 16 GB
    with h5py.File(bomb, "w") as f:
        f.attrs["format"], f.attrs["version"] = FORMAT, 1
        f.create_group("stacks").create_dataset("huge", shape=(10, 20000, 20000), dtype="f4", chunks=(1, 100, 100))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ScanError, match=r"bomb.h5::huge: declares 20000 x 20000 pixels, over the limit"):
        load_stack(bomb)

    grouped = tmp_path / "grouped.h5"
    with h5py.File(grouped, "w") as f:
        f.attrs["format"], f.attrs["version"] = FORMAT, 1
        f.create_group("stacks").create_group("sub")
    with pytest.raises(ScanError, match="grouped.h5::sub: not a stack: a group"):
        load_stack(grouped)

    big = image_folder(tmp_path / "big_png", 3)
    png_header_only(big / "img_1.png", 13000, 13000)
    with pytest.raises(ScanError, match=r"img_1.png: declares 13000 x 13000 pixels"):
        load_stack(big)

    fifo_folder = image_folder(tmp_path / "fifo", 3)
    os.mkfifo(fifo_folder / "img_9.png")
    with pytest.raises(ScanError, match=r"img_9.png: not a regular file \(a FIFO\)"):
        load_stack(fifo_folder)

    sxm = tmp_path / "sxm"
    sxm.mkdir()
    (sxm / "a_-100pm.sxm").symlink_to("/dev/zero")
    (sxm / "b_-200pm.sxm").symlink_to("/dev/zero")
    with pytest.raises(ScanError, match=r"a_-100pm.sxm: not a regular file \(a device, through a symlink\)"):
        load_stack(sxm)

    negative = tmp_path / "neg"
    negative.mkdir()
    for name in ("a_-100pm.sxm", "b_-200pm.sxm"):
        header = (":SCAN_PIXELS:\n-5 -5\n:DATA_INFO:\n\tChannel\tName\tUnit\tDirection\n"
                  "\t1\tFrequency_Shift\tHz\tboth\n:SCANIT_END:\n")
        (negative / name).write_bytes(header.encode() + b"\x1a\x04" + b"\0" * 64)
    with pytest.raises(ScanError, match=r"a_-100pm.sxm: declares an empty or negative image size"):
        load_stack(negative)

    npz = tmp_path / "huge.npz"  # a header declaring a huge array, no data
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1, 1), np.float32))
    header["shape"] = (30000, 30000, 10)
    import io
    import zipfile
    raw = io.BytesIO()
    np.lib.format.write_array_header_1_0(raw, header)
    with zipfile.ZipFile(npz, "w") as z:
        z.writestr("data.npy", raw.getvalue())
    with pytest.raises(ScanError, match=r"huge.npz: declares 30000 x 30000 pixels, over the limit"):
        load_stack(npz)


def test_pillow_bomb_error_is_a_scan_error(tmp_path, monkeypatch):
    from PIL import Image

    from raypipe import load_stack

    folder = image_folder(tmp_path / "f", 3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's own bomb check fires first
    with pytest.raises(ScanError, match="img_0.png: unreadable"):
        load_stack(folder)


def test_folder_named_like_an_archive_source_is_read(tmp_path):
    from raypipe import load_stack

    folder = image_folder(tmp_path / "a::b", 4)
    assert load_stack(folder).n == 4


def test_poisoned_night_labels_the_good_scans(ray_cluster, tmp_path, model_file):
    from raypipe.labels.job import label_archive
    from raypipe.scans.archive import FORMAT

    src = tmp_path / "src"
    image_folder(src / "good1")
    image_folder(src / "good2", seed=1)
    image_folder(src / "a::b", seed=2)
    with h5py.File(src / "bomb.h5", "w") as f:
        f.attrs["format"], f.attrs["version"] = FORMAT, 1
        f.create_group("stacks").create_dataset("huge", shape=(10, 20000, 20000), dtype="f4", chunks=(1, 100, 100))
    big = image_folder(src / "big", 3, seed=3)
    png_header_only(big / "img_2.png", 13000, 13000)
    fifo = image_folder(src / "fifo", 3, seed=4)
    os.mkfifo(fifo / "img_7.png")
    (src / "zero").mkdir()
    (src / "zero" / "x_-100pm.sxm").symlink_to("/dev/zero")
    (src / "zero" / "y_-200pm.sxm").symlink_to("/dev/zero")
    start = time.time()
    summary = label_archive(str(src), str(tmp_path / "out"), model=model_file, settle=0)
    assert time.time() - start < 240
    rows = rows_of(tmp_path / "out")
    by_unit = {Path(r["unit"]).name: r for r in rows}
    assert {k for k, r in by_unit.items() if r["status"] == "ok"} == {"good1", "good2", "a::b"}
    for name, needle in (("bomb.h5", "declares 20000 x 20000"), ("big", "13000 x 13000"), ("fifo", "FIFO"),
                         ("zero", "device")):
        assert needle in by_unit[name]["error"] and by_unit[name]["error_kind"] == "permanent", by_unit[name]
    assert (summary.ok, summary.errors) == (3, 4)


# --- the table under faults ----------------------------------------------------------------------
def test_half_copied_folder_is_superseded_and_arrivals_wait(ray_cluster, tmp_path, model_file):
    from raypipe.labels.job import label_archive

    src, out = tmp_path / "src", tmp_path / "out"
    image_folder(src / "done")
    partial = src / "partial"
    partial.mkdir()
    full = image_folder(tmp_path / "full", 10, seed=5)
    for k in range(5):
        shutil.copy(full / f"img_{k}.png", partial)
    first = label_archive(str(src), str(out), model=model_file, settle=0)
    assert first.units_new == 2
    assert {Path(r["unit"]).name: r["n_images"] for r in rows_of(out)} == {"done": 10, "partial": 5}

    for k in range(5, 10):  # the copy completes; the next night replaces the unit's rows
        shutil.copy(full / f"img_{k}.png", partial)
    second = label_archive(str(src), str(out), model=model_file, settle=0)
    assert (second.units_new, second.units_replaced, second.units_unchanged) == (0, 1, 1)
    rows = rows_of(out)
    assert {Path(r["unit"]).name: r["n_images"] for r in rows} == {"done": 10, "partial": 10}
    assert once_each(rows) and len(rows) == 2

    old = time.time() - 7200
    for f in src.rglob("*.png"):
        os.utime(f, (old, old))
    image_folder(src / "arriving", seed=6)  # files younger than --settle wait for the next run
    third = label_archive(str(src), str(out), model=model_file, settle=3600)
    assert (third.units_arriving, third.units_new) == (1, 0) and third.arriving[0].endswith("arriving")
    assert len(rows_of(out)) == 2 and "newer than --settle" in third.report()
    fourth = label_archive(str(src), str(out), model=model_file, settle=0, run_date="2026-11-26")  # arrived
    assert (fourth.units_new, fourth.units_unchanged, fourth.ok) == (1, 2, 1)
    rows = rows_of(out)
    assert len(rows) == 3 and once_each(rows) and [r["run_id"] for r in rows].count(fourth.run_id) == 1


def test_transient_failures_are_retried_and_replaced(ray_cluster, tmp_path, model_file):
    from raypipe.labels.job import label_archive
    from raypipe.scans.limits import ReadLimits

    src, out = tmp_path / "src", tmp_path / "out"
    image_folder(src / "one")
    image_folder(src / "two", seed=1)
    # a time limit too short for any read: every unit fails for a reason that may pass
    first = label_archive(str(src), str(out), model=model_file, settle=0, limits=ReadLimits(read_seconds=1e-6))
    rows = rows_of(out)
    assert first.errors == 2 and {r["error_kind"] for r in rows} == {"transient"}
    assert all("longer than" in r["error"] for r in rows)
    second = label_archive(str(src), str(out), model=model_file, settle=0)
    assert second.units_replaced == 2
    rows = rows_of(out)
    assert [r["status"] for r in rows] == ["ok", "ok"] and once_each(rows)
    # --relabel all replaces every unit; rows stay one per stack
    third = label_archive(str(src), str(out), model=model_file, settle=0, relabel="all")
    assert third.units_replaced == 2 and len(rows_of(out)) == 2
    assert {r["run_id"] for r in rows_of(out)} == {third.run_id}


def _job(src: Path, out: Path, model: str, run_date: str = "2026-11-24", extra: str = "",
         before: str = "") -> subprocess.Popen:
    import ray

    address = ray.get_runtime_context().gcs_address  # this session's cluster, not whichever started last
    code = (f"import ray, json; ray.init(address={address!r}, log_to_driver=False)\n{before}"
            "from raypipe.labels.job import label_archive; "
            f"s = label_archive({str(src)!r}, {str(out)!r}, model={model!r}, run_date={run_date!r}, settle=0{extra}); "
            "print('SUMMARY', json.dumps(s.as_dict()))")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, cwd=ROOT)


@pytest.mark.slow
def test_two_jobs_at_once_label_every_stack_once(ray_cluster, tmp_path, model_file):
    src, out = tmp_path / "src", tmp_path / "out"
    for k in range(6):
        image_folder(src / f"scan{k}", seed=k)
    jobs = [_job(src, out, model_file), _job(src, out, model_file)]
    outputs = [j.communicate(timeout=400)[0] for j in jobs]
    if [j.returncode for j in jobs] != [0, 0]:  # the whole end of each job's output, not pytest's cut of it
        pytest.fail("\n\n".join(f"job {k} exited {j.returncode}:\n{o[-4000:]}"
                                for k, (j, o) in enumerate(zip(jobs, outputs))))
    summaries = [json.loads(o.split("SUMMARY ", 1)[1]) for o in outputs]
    assert sorted(s["units_new"] for s in summaries) == [0, 6]  # the second waited, then found nothing new
    rows = rows_of(out)
    assert len(rows) == 6 and once_each(rows)


@pytest.mark.slow
def test_kill_after_commit_then_new_arrival(ray_cluster, tmp_path, model_file):
    """Killed the moment its rows became visible (after the commit, before it released its lease), then a
    new folder arrives: the next run takes the dead job's lease over and every stack is there once."""
    import signal

    from raypipe.labels.job import label_archive
    from raypipe.labels.table import TableSettings, open_table

    src, out = tmp_path / "src", tmp_path / "out"
    for k in range(4):
        image_folder(src / f"scan{k}", seed=k)
    # a hook in the child (test code only) stops the job right after its commit and says so
    hook = ("import raypipe.labels.job as job, time\n"
            "def committed(*args, **kwargs):\n"
            "    print('COMMITTED', flush=True); time.sleep(600)\n"
            "job.remove_orphans = committed\n")
    job = _job(src, out, model_file, before=hook)
    for line in job.stdout:
        if "COMMITTED" in line:
            break
    assert job.poll() is None and open_table(TableSettings(str(out))).current_snapshot() is not None
    os.killpg(job.pid, signal.SIGKILL)
    job.communicate()
    image_folder(src / "late", seed=9)
    summary = label_archive(str(src), str(out), model=model_file, settle=0, lease_wait=300)
    rows = rows_of(out)
    assert (summary.units_new, summary.units_unchanged) == (1, 4) and len(rows) == 5 and once_each(rows)


def test_writer_lease(tmp_path):
    from raypipe.labels.lease import WriterLease
    from raypipe.labels.table import LeaseBusy, LeaseLost

    url = f"sqlite:///{tmp_path}/lease.db"
    first = WriterLease(url, "t", ttl=60).acquire(0)
    second = WriterLease(url, "t", ttl=60)
    with pytest.raises(LeaseBusy, match="another raypipe job is writing t"):
        second.acquire(0.5)
    first.release()
    second.acquire(0)
    # a lease whose holder died on this host is taken over at once
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import sqlalchemy as sa
    with second.engine.begin() as conn:
        conn.execute(sa.update(second.rows).values(pid=int(dead.stdout), holder="dead-holder"))
    with pytest.raises(LeaseLost):
        second.renew()
    third = WriterLease(url, "t", ttl=60).acquire(0)
    third.release()
    second.release()


def _first_run(output: str, catalog: str | None, start: float) -> str:
    """What a labelling run does first: open (create) the labels table, then make its writer lease."""
    from raypipe.labels.job import table_schema
    from raypipe.labels.lease import WriterLease
    from raypipe.labels.table import TableSettings, open_table
    from raypipe.pipelines.schema import OUTPUT_SCHEMA

    settings = TableSettings(output, catalog=catalog)
    time.sleep(max(0.0, start - time.time()))
    try:
        open_table(settings, table_schema(OUTPUT_SCHEMA), create=True)
        WriterLease(settings.lease_url(), "t").engine.dispose()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - the test reports what the loser of the race met
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


def test_first_runs_at_the_same_moment_all_open_the_table_and_a_lease(tmp_path):
    """First runs start together on a new output: each creates the catalog's tables, the labels table and
    the lease's table; the losers find them made (SQLite says "already exists" to a second CREATE, which
    once ended one of two jobs started at once in CI)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(time.sleep, [0.0] * 4)  # the workers started and ready
        for trial in range(8):
            output, start = str(tmp_path / f"out-{trial}"), time.time() + 0.5
            met = pool.starmap(_first_run, [(output, None, start)] * 4)
            assert met == ["ok"] * 4, (trial, met)


# --- the command line -------------------------------------------------------------------------------
def test_cli_refuses_a_bad_run_date_and_hides_uri_credentials(tmp_path, capsys):
    from raypipe.cli import main

    assert main(["label", str(tmp_path), "--out", str(tmp_path / "out"), "--run-date", "../../../x"]) == 1
    err = capsys.readouterr().err
    assert "is not a date" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert main(["label", "s3://AKIAEXAMPLEKEY:TopSecretValue99@nobucket/scans", "--out", str(tmp_path / "o2"),
                 "--s3-endpoint", "http://127.0.0.1:9"]) == 1
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "TopSecretValue99" not in text and "AKIAEXAMPLEKEY" not in text and "Traceback" not in text
    assert "does not answer" in text and len(captured.err.strip().splitlines()) == 1  # said before Ray starts


# --- a real PostgreSQL catalog ------------------------------------------------------------------------
def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


class PostgresServer:
    """A throw-away PostgreSQL server on 127.0.0.1 (Debian's postgresql, installed by `make test-deps`)
    that a test can stop and start again."""

    def __init__(self, bindir: Path, run_as: list[str], data: Path, port: int) -> None:
        self.bindir, self.run_as, self.data, self.port = bindir, run_as, data, port
        self.url = f"postgresql+psycopg2://raypipe@127.0.0.1:{port}/labels"

    def ctl(self, *args: str) -> None:
        subprocess.run(self.run_as + [str(self.bindir / "pg_ctl"), "-D", str(self.data / "db"), *args], check=True,
                       capture_output=True)

    def start(self) -> None:
        self.ctl("-w", "-l", str(self.data / "log"), "-o",
                 f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data}", "start")

    def stop(self, mode: str = "fast") -> None:
        self.ctl("-w", "-m", mode, "stop")


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory):
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb) on this machine: apt-get install postgresql")
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip("running as root without a 'postgres' user to run the server as")
        run_as = ["runuser", "-u", "postgres", "--"]
    data = Path(f"/tmp/raypipe-pg-{os.getpid()}")
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir()
    if run_as:
        shutil.chown(data, "postgres")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    subprocess.run(run_as + [str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "raypipe"],
                   check=True, capture_output=True)
    server = PostgresServer(bindir, run_as, data, port)
    server.start()
    subprocess.run(run_as + [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "raypipe", "labels"],
                   check=True, capture_output=True)
    yield server
    subprocess.run(run_as + [str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
                   capture_output=True)
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres(postgres_server):
    return postgres_server.url


@pytest.mark.slow
def test_first_runs_at_the_same_moment_on_a_new_postgres_catalog(postgres_server, tmp_path):
    """The same race on PostgreSQL, each time in a new database: the losers' CREATE TABLE fails with a
    duplicate table or a unique violation (pg_type), and they read what the winner made."""
    import multiprocessing

    server = postgres_server
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(time.sleep, [0.0] * 4)
        for trial in range(4):
            subprocess.run(server.run_as + [str(server.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(server.port),
                                            "-U", "raypipe", f"race{trial}"], check=True, capture_output=True)
            catalog, start = server.url.rsplit("/", 1)[0] + f"/race{trial}", time.time() + 0.5
            met = pool.starmap(_first_run, [(str(tmp_path / f"out-{trial}"), catalog, start)] * 4)
            assert met == ["ok"] * 4, (trial, met)


@pytest.mark.slow
def test_postgres_catalog(ray_cluster, postgres, tmp_path, model_file):
    from raypipe.labels.job import label_archive
    from raypipe.labels.table import export_labels, read_labels

    src, out = tmp_path / "src", tmp_path / "out"
    image_folder(src / "one")
    first = label_archive(str(src), str(out), model=model_file, settle=0, catalog=postgres)
    assert first.ok == 1 and not (out / "catalog.db").exists()
    image_folder(src / "two", seed=1)
    second = label_archive(str(src), str(out), model=model_file, settle=0, catalog=postgres)
    assert (second.units_new, second.units_unchanged) == (1, 1)
    assert read_labels(str(out), catalog=postgres).num_rows == 2
    assert read_labels(str(out), catalog=postgres, as_of=first.snapshot_id).num_rows == 1
    assert export_labels(str(out), str(tmp_path / "all.parquet"), catalog=postgres) == 2
    import pyarrow.parquet as pq
    assert pq.read_table(tmp_path / "all.parquet").num_rows == 2
    from raypipe.labels.table import TableError
    with pytest.raises(TableError, match="already has a table raypipe.labels for another output"):
        label_archive(str(src), str(tmp_path / "elsewhere"), model=model_file, settle=0, catalog=postgres)


@pytest.mark.slow
def test_sigterm_ends_a_run_cleanly_with_its_lease_released(ray_cluster, tmp_path, model_file):
    """SIGTERM (as Kubernetes stops a pod) mid-run: the job exits 143 within seconds, saying so in one line,
    its lease released (the next run does not wait for it) and nothing committed; the next run labels all."""
    import signal

    from raypipe.labels.job import label_archive
    from raypipe.labels.table import TableSettings, open_table

    src, out = tmp_path / "src", tmp_path / "out"
    for k in range(4):
        image_folder(src / f"scan{k}", seed=k)
    import ray

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    job = subprocess.Popen([sys.executable, "-m", "raypipe.cli", "label", str(src), "--out", str(out), "--settle", "0",
                            "--model", model_file, "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=env, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "catalog.db").exists():
        time.sleep(0.05)
    time.sleep(2)  # inside the run: the lease taken, the pipeline starting
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=60)
    assert job.returncode == 143 and "terminated (SIGTERM)" in err and "Traceback" not in err, err
    assert open_table(TableSettings(str(out))).scan().to_arrow().num_rows == 0
    import sqlite3

    with sqlite3.connect(out / "catalog.db") as db:  # released on the way out, not left to expire
        assert db.execute("SELECT count(*) FROM raypipe_writer_lease").fetchone()[0] == 0
    summary = label_archive(str(src), str(out), model=model_file, settle=0, lease_wait=5)
    assert summary.ok == 4 and len(rows_of(out)) == 4


# --- the real parts failing: a frozen lease holder, a locked or restarting catalog -------------------
def _cli_job(src: Path, out, model: str, hook: str, *options: str) -> subprocess.Popen:
    """``raypipe label`` in a child joined to the tests' cluster, with a hook (test code only) run first."""
    import ray

    args = ["label", str(src), "--out", str(out), "--settle", "0", "--model", model, "-q", *options]
    code = f"{hook}\nfrom raypipe.cli import main\nraise SystemExit(main({args!r}))"
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT, start_new_session=True)


def _wait_for(job: subprocess.Popen, word: str) -> None:
    for line in iter(job.stdout.readline, ""):
        if line.startswith(word):
            return
    raise AssertionError(f"the job ended before {word}: {job.communicate()[1]}")


# the child waits, once its data files are written and before its commit, until the test says GO
WAIT_BEFORE_COMMIT = """
import os, time, raypipe.labels.sink as sink
written = sink.LabelsSink.on_write_complete
def on_write_complete(self, result):
    print('WRITTEN', flush=True)
    while not os.path.exists(os.environ['GO']):
        time.sleep(0.05)
    start = time.monotonic()
    written(self, result)
    print(f'COMMITTED after {time.monotonic() - start:.1f} s', flush=True)
sink.LabelsSink.on_write_complete = on_write_complete
"""


@pytest.mark.slow
def test_a_holder_frozen_past_its_lease_cannot_commit_over_the_next_one(ray_cluster, tmp_path, model_file):
    """A job stopped (SIGSTOP) inside its commit, after every check before it, for longer than its lease
    lives; another job takes the lease over. Woken (SIGCONT), the frozen job's commit is refused inside the
    catalog's own transaction: it exits 1 with one line, nothing of it visible; then every stack once."""
    import signal

    from raypipe.labels.job import label_archive
    from raypipe.labels.lease import WriterLease
    from raypipe.labels.table import TableSettings, open_table

    src, out = tmp_path / "src", tmp_path / "out"
    for k in range(4):
        image_folder(src / f"scan{k}", seed=k)
    hook = ("import os, signal, pyiceberg.catalog.sql as sql\n"
            "commit = sql.SqlCatalog.commit_table\n"
            "def frozen(self, *args, **kwargs):\n"
            "    print('COMMITTING', flush=True); os.kill(os.getpid(), signal.SIGSTOP)\n"
            "    return commit(self, *args, **kwargs)\n"
            "sql.SqlCatalog.commit_table = frozen\n")
    job = _cli_job(src, out, model_file, hook, "--lease-ttl", "3")
    _wait_for(job, "COMMITTING")
    deadline = time.time() + 30
    while Path(f"/proc/{job.pid}/stat").read_text().split(")")[1].split()[0] != "T":  # stopped
        assert time.time() < deadline
        time.sleep(0.05)
    settings = TableSettings(str(out))
    time.sleep(4)  # past the lease's life
    other = WriterLease(settings.lease_url(), f"{settings.table}@{settings.location}", ttl=120).acquire(0)
    try:
        os.kill(job.pid, signal.SIGCONT)
        _, err = job.communicate(timeout=60)
        assert job.returncode == 1 and "writer lease" in err and "was lost" in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert open_table(settings).current_snapshot() is None  # nothing of the frozen job is visible
    finally:
        other.release()
    summary = label_archive(str(src), str(out), model=model_file, settle=0, lease_wait=10)
    rows = rows_of(out)
    assert summary.ok == 4 and len(rows) == 4 and once_each(rows)


@pytest.mark.slow
def test_a_catalog_locked_by_another_program_is_waited_out(ray_cluster, tmp_path, model_file):
    """Another program holds the SQLite catalog in an exclusive transaction for 12 s just as the run is
    about to commit: the run waits for it and commits; every stack once."""
    src, out, go = tmp_path / "src", tmp_path / "out", tmp_path / "go"
    for k in range(3):
        image_folder(src / f"scan{k}", seed=k)
    job = _cli_job(src, out, model_file, f"import os; os.environ['GO'] = {str(go)!r}\n{WAIT_BEFORE_COMMIT}")
    _wait_for(job, "WRITTEN")
    locker = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        f"db = sqlite3.connect({str(out / 'catalog.db')!r}, isolation_level=None)\n"
        "db.execute('BEGIN EXCLUSIVE'); print('LOCKED', flush=True); time.sleep(12); db.execute('COMMIT')")],
        stdout=subprocess.PIPE, text=True)
    assert locker.stdout.readline().strip() == "LOCKED"
    go.touch()
    out_text, err = job.communicate(timeout=180)
    assert locker.wait(timeout=30) == 0 and job.returncode == 0, err
    waited = float(out_text.split("COMMITTED after ", 1)[1].split(" s")[0])
    assert waited >= 8, out_text  # it met the lock, and waited it out
    rows = rows_of(out)
    assert len(rows) == 3 and once_each(rows) and {r["status"] for r in rows} == {"ok"}


@pytest.mark.slow
def test_a_postgres_catalog_restarting_before_the_commit_is_waited_out(ray_cluster, postgres_server, tmp_path,
                                                                        model_file):
    """The PostgreSQL catalog stops between the run's data write and its commit and comes back 6 s later:
    the run retries with backoff and commits; every stack once, and the next run finds nothing to do."""
    from raypipe.labels.job import label_archive
    from raypipe.labels.table import read_labels

    src, out, go = tmp_path / "src", tmp_path / "out", tmp_path / "go"
    for k in range(3):
        image_folder(src / f"scan{k}", seed=k)
    job = _cli_job(src, out, model_file, f"import os; os.environ['GO'] = {str(go)!r}\n{WAIT_BEFORE_COMMIT}",
                   "--catalog", postgres_server.url, "--table", "raypipe.restart")  # its own table in the catalog
    _wait_for(job, "WRITTEN")
    postgres_server.stop()
    try:
        go.touch()
        time.sleep(6)
    finally:
        postgres_server.start()
    out_text, err = job.communicate(timeout=240)
    assert job.returncode == 0, err
    assert float(out_text.split("COMMITTED after ", 1)[1].split(" s")[0]) >= 4, out_text  # it met the outage
    rows = read_labels(str(out), catalog=postgres_server.url, table="raypipe.restart").to_pylist()
    assert len(rows) == 3 and once_each(rows) and {r["status"] for r in rows} == {"ok"}
    again = label_archive(str(src), str(out), model=model_file, settle=0, catalog=postgres_server.url,
                          table="raypipe.restart")
    assert (again.units_new, again.units_unchanged) == (0, 3)


@pytest.mark.slow
def test_a_full_disk_fails_the_run_in_one_line_and_the_next_run_labels_everything_once(ray_cluster, tmp_path,
                                                                                        model_file):
    """The output's disk (a 4 MB tmpfs) fills up during a run: the run exits 1 with one line naming the output
    and the problem (no Ray Data traceback on the console), the table stays readable at its previous
    snapshot, and the run after space is freed labels the new stacks once."""
    from raypipe.labels.job import label_archive
    from raypipe.labels.table import TableSettings, open_table

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): the full-disk test needs root")
    try:
        src, out = tmp_path / "src", disk / "out"
        for k in range(3):
            image_folder(src / f"scan{k}", seed=k)
        first = label_archive(str(src), str(out), model=model_file, settle=0, gallery="")
        for k in range(3, 6):
            image_folder(src / f"scan{k}", seed=k)
        filler = disk / "filler"
        with open(filler, "wb") as f:  # fill the disk, then leave 40 KB: the run's data files do not fit
            with pytest.raises(OSError, match="No space left"):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        os.truncate(filler, filler.stat().st_size - 40 * 1024)
        job = _cli_job(src, out, model_file, "", "--gallery", "")
        _, err = job.communicate(timeout=180)
        assert job.returncode == 1 and len(err.strip().splitlines()) == 1, err
        assert f"{out}: no space left on the device" in err and "Traceback" not in err
        table = open_table(TableSettings(str(out)))
        assert table.current_snapshot().snapshot_id == first.snapshot_id and len(rows_of(out)) == 3
        filler.unlink()
        second = label_archive(str(src), str(out), model=model_file, settle=0, gallery="")
        rows = rows_of(out)
        assert (second.units_new, second.units_unchanged, second.ok) == (3, 3, 3)
        assert len(rows) == 6 and once_each(rows)
        referenced = open_table(TableSettings(str(out))).inspect.all_files().column("file_path").to_pylist()
        assert all(Path(f.removeprefix("file://")).stat().st_size > 0 for f in referenced)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.mark.slow
def test_object_storage_down_before_the_commit_is_waited_out(ray_cluster, tmp_path, model_file):
    """The S3 endpoint (moto's server) stops after the run wrote its data files and before its commit, and
    comes back 5 s later: the commit's metadata writes are retried and the run commits; every stack once."""
    from helpers import moto_server
    from raypipe.labels.job import label_archive

    server, options = moto_server(bucket="down")
    endpoint, port = options["endpoint_url"], int(options["endpoint_url"].rsplit(":", 1)[1])
    keys = {"AWS_ACCESS_KEY_ID": options["key"], "AWS_SECRET_ACCESS_KEY": options["secret"]}
    try:
        src, go = tmp_path / "src", tmp_path / "go"
        for k in range(3):
            image_folder(src / f"scan{k}", seed=k)
        catalog = f"sqlite:///{tmp_path}/catalog.db"
        env = "".join(f"os.environ[{k!r}] = {v!r}\n" for k, v in keys.items())
        job = _cli_job(src, "s3://down/labels", model_file,
                       f"import os; os.environ['GO'] = {str(go)!r}\n{env}{WAIT_BEFORE_COMMIT}",
                       "--catalog", catalog, "--s3-endpoint", endpoint)
        _wait_for(job, "WRITTEN")
        server.stop()
        try:
            go.touch()
            time.sleep(5)
        finally:
            server, _ = moto_server(port)  # the same buckets
        out_text, err = job.communicate(timeout=240)
        assert job.returncode == 0, err
        assert float(out_text.split("COMMITTED after ", 1)[1].split(" s")[0]) >= 3, out_text  # it met the outage
        again = label_archive(str(src), "s3://down/labels", model=model_file, settle=0, catalog=catalog,
                              storage_options=options)
        assert (again.units_new, again.units_unchanged) == (0, 3)
        from raypipe.labels.table import read_labels

        rows = read_labels("s3://down/labels", options, catalog=catalog).to_pylist()
        assert len(rows) == 3 and once_each(rows)
    finally:
        server.stop()


def test_a_catalog_locked_longer_than_its_patience_fails_in_one_line(tmp_path, model_file, monkeypatch, capsys):
    """The SQLite catalog held by another program for longer than RAYPIPE_CATALOG_PATIENCE (here 2 s): the
    run gives up with one line naming the catalog and the cause, before Ray starts; nothing is written."""
    import sqlite3

    import raypipe.labels.table as table
    from raypipe.cli import main

    src, out = tmp_path / "src", tmp_path / "out"
    image_folder(src / "scan0")
    out.mkdir()
    holder = sqlite3.connect(out / "catalog.db", isolation_level=None)
    holder.execute("CREATE TABLE mine (x)")
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(table, "CATALOG_PATIENCE", 2.0)
    try:
        start = time.monotonic()
        assert main(["label", str(src), "--out", str(out), "--settle", "0", "--model", model_file, "-q"]) == 1
        waited = time.monotonic() - start
    finally:
        holder.rollback()
        holder.close()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did not answer for 2 s (" in err and "database is locked" in err, err
    assert f"sqlite:///{out}/catalog.db" in err and 2 <= waited < 60
    assert not (out / "table").exists()


@pytest.mark.slow
def test_a_table_of_an_earlier_raypipe_gains_the_new_column_and_a_count_model_fills_it(ray_cluster, tmp_path,
                                                                                       model_file):
    """A labels table made before the count output existed (no ``formula_counts`` column) takes the column
    on the next run: the earlier rows read it as null, a model without counts writes null, and a model with
    the count output writes its own formula there ("stale": the units labelled by another model again), which
    the gallery shows beside the reading."""
    import torch

    from raypipe.chem.elements import ELEMENTS
    from raypipe.labels.job import label_archive, table_schema
    from raypipe.labels.table import TableSettings, open_table, read_labels
    from raypipe.pipelines.schema import OUTPUT_SCHEMA

    src, out = tmp_path / "src", tmp_path / "out"
    image_folder(src / "a")
    earlier = pa_schema_without(table_schema(OUTPUT_SCHEMA), "formula_counts")
    open_table(TableSettings(str(out)), earlier, create=True)
    label_archive(str(src), str(out), model=model_file, settle=0)
    rows = read_labels(str(out), columns=["unit", "status", "formula", "formula_counts"]).to_pylist()
    assert [(r["status"], r["formula_counts"]) for r in rows] == [("ok", None)]

    config = ModelConfig(ngf=4, ndf=4, conv3d_channels=2, head="palette", counts=True)
    torch.manual_seed(0)
    generator = define_G(config)  # a fresh count branch: about one atom of each element, whatever it sees
    torch.nn.init.zeros_(generator.out[0].weight)  # and the background everywhere, as model_file's
    with torch.no_grad():
        generator.out[0].bias.copy_(torch.tensor([10.0] + [0.0] * (generator.out[0].out_channels - 1)))
    counting = save_model(generator, config, tmp_path / "counting.safetensors", name="counting")
    image_folder(src / "b", seed=1)
    summary = label_archive(str(src), str(out), model=str(counting), settle=0, relabel="stale")
    rows = read_labels(str(out), columns=["unit", "status", "error", "formula_counts", "model"]).to_pylist()
    assert (summary.ok, summary.errors) == (2, 0), rows
    one_each = "CH" + "".join(sorted(e for e in ELEMENTS if e not in ("C", "H")))
    assert sorted((Path(r["unit"]).name, r["formula_counts"]) for r in rows) == [("a", one_each), ("b", one_each)]
    assert {r["model"].split("@")[0] for r in rows} == {"counting"}
    assert Path(summary.gallery).read_text().count(f"count output: {one_each}") == 2  # beside each reading


def pa_schema_without(schema, name: str):
    return schema.remove(schema.get_field_index(name))
