"""Batch labelling: read_scans, predict_dataset, and the nightly job (idempotent, atomic, local and S3)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from raypipe.model.config import ModelConfig
from raypipe.model.files import save_model
from raypipe.model.networks import define_G
from raypipe.resources import EXAMPLES

EXAMPLE_SCANS = EXAMPLES / "scans"
N_GOOD = 16  # 15 stacks in sample_scans.h5 + the PNG folder


@pytest.fixture()
def archive(tmp_path) -> Path:
    """The bundled scans plus a corrupt HDF5 file, a truncated NPZ and a stray text file."""
    return _archive(tmp_path)


def _archive(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    shutil.copytree(EXAMPLE_SCANS, root)
    (root / "corrupt.h5").write_bytes(b"\x89HDF\r\n" + b"\0" * 50)
    good = np.random.default_rng(0).normal(size=(32, 32, 6)).astype(np.float32)
    np.savez(root / "truncated.npz", data=good)
    (root / "truncated.npz").write_bytes((root / "truncated.npz").read_bytes()[:300])
    (root / "README.txt").write_text("not a scan")
    return root


def _rows(out: str, storage_options=None, catalog=None) -> list[dict]:
    from raypipe.labels.table import read_labels

    return read_labels(out, storage_options, catalog=catalog).to_pylist()


def _key(row: dict) -> tuple:
    return row["source"], row["scan_id"]


def test_read_scans_one_row_per_stack(ray_cluster, archive):
    from raypipe.pipelines.predict import read_scans

    rows = read_scans(str(archive)).take_all()
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == N_GOOD and len(rows) == N_GOOD + 2
    assert sum("::" in r["source"] for r in ok) == 15  # the HDF5 archive became one row per stack
    errors = {Path(r["source"]).name: r["error"] for r in rows if r["status"] == "error"}
    assert "corrupt.h5" in errors and "HDF5" in errors["corrupt.h5"]
    assert "truncated.npz" in errors and "truncated" in errors["truncated.npz"]
    with pytest.raises(FileNotFoundError, match="no such"):
        read_scans(str(archive / "missing"))
    (archive / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no scans"):
        read_scans(str(archive / "empty"))


def test_an_archive_is_read_in_small_blocks(ray_cluster, archive, monkeypatch):
    """The 15-stack archive travels in blocks of at most READ_BLOCK_ROWS stacks (several read tasks, no
    block holding a whole archive), with every stack once; 0 keeps one block per unit."""
    import raypipe.pipelines.predict as predict

    def blocks(rows_per_block: int) -> list[int]:
        monkeypatch.setattr(predict, "READ_BLOCK_ROWS", rows_per_block)
        dataset = predict.read_scans(str(archive / "sample_scans.h5")).materialize()
        assert sorted(dataset.unique("source")) == sorted(r["source"] for r in dataset.take_all())  # each once
        assert dataset.count() == 15
        return [meta.num_rows for bundle in dataset.iter_internal_ref_bundles() for meta in bundle.metadata]

    small = blocks(4)
    assert max(small) <= 4 and len(small) >= 4 and sum(small) == 15
    assert blocks(0) == [15]


@pytest.fixture(scope="module")
def labelled(ray_cluster, model_file, tmp_path_factory):
    """The archive (the bundled scans and three bad files) labelled once, for the tests that only read it."""
    from raypipe.labels.job import label_archive

    root = tmp_path_factory.mktemp("labelled")
    source = _archive(root)
    out = str(root / "labels")
    return source, out, label_archive(str(source), out, model=model_file, run_date="2026-11-24", settle=0)


def test_nightly_job_labels_every_stack_once_and_twice_changes_nothing(labelled, model_file):
    from raypipe.chem.depiction import decode_png
    from raypipe.labels.job import label_archive

    archive, out, first = labelled
    assert (first.units_new, first.ok, first.errors, first.ignored_files) == (4, N_GOOD, 2, 1)
    rows = _rows(out)
    assert len(rows) == N_GOOD + 2 and len({_key(r) for r in rows}) == len(rows)
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(r["model"].startswith("tiny@") and r["depiction"][:4] == b"\x89PNG" for r in ok)
    assert all(r["n_images"] == 10 and len(r["heights"]) == 10 for r in ok)
    previews = [decode_png(r["input_preview"]) for r in ok]  # closest and farthest slices, side by side
    assert all(p.shape == (128, 256, 3) and p.std() > 0 for p in previews)
    assert {r["truth_formula"] for r in ok} >= {"C24H8O6", "C14H10"}
    assert {r["run_date"] for r in rows} == {"2026-11-24"} and {r["run_id"] for r in rows} == {first.run_id}
    errors = {Path(r["unit"]).name: r["error_kind"] for r in rows if r["status"] == "error"}
    assert errors == {"corrupt.h5": "permanent", "truncated.npz": "permanent"}
    page = Path(first.gallery).read_text()  # the Python API writes the run's gallery beside a local output too
    assert page.count("class='card'") == N_GOOD and page.count("card error") == 2

    second = label_archive(str(archive), out, model=model_file, run_date="2026-11-25", settle=0)
    assert (second.units_new, second.units_replaced, second.units_unchanged, second.ok) == (0, 0, 4, 0)
    assert second.snapshot_id == first.snapshot_id  # nothing to do: no commit
    assert sorted(map(_key, _rows(out))) == sorted(map(_key, rows))


@pytest.mark.slow
def test_nightly_job_killed_then_rerun_gives_the_same_rows(ray_cluster, labelled, archive, model_file, tmp_path):
    from raypipe.labels.job import label_archive
    from raypipe.labels.table import TableSettings, open_table, remove_orphans

    reference = labelled[1]
    out = tmp_path / "killed"
    address = ray_cluster.get_runtime_context().gcs_address  # this session's cluster
    # the job stops the moment its data files are written, before its commit (a hook in the child, test code
    # only), says so, and is killed there: the kill lands between the write and the commit, every time
    job = subprocess.Popen([sys.executable, "-c", (
        f"import ray, sys, time; ray.init(address={address!r}, log_to_driver=False)\n"
        "import raypipe.labels.sink as sink\n"
        "def written(self, result):\n"
        "    print('WRITTEN', flush=True); time.sleep(600)\n"
        "sink.LabelsSink.on_write_complete = written\n"
        "from raypipe.labels.job import label_archive\n"
        f"label_archive({str(archive)!r}, {str(out)!r}, model={model_file!r}, run_date='2026-11-24', settle=0)")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    for line in iter(job.stdout.readline, ""):  # its progress lines come first
        if line.startswith("WRITTEN"):
            break
    else:
        raise AssertionError("the job ended before writing its data files")
    os.killpg(job.pid, signal.SIGKILL)  # data files written, the commit not made
    job.wait()
    settings = TableSettings(str(out))
    assert open_table(settings).scan().to_arrow().num_rows == 0 and list(out.glob("table/data/*.parquet"))
    label_archive(str(archive), str(out), model=model_file, run_date="2026-11-24", settle=0)
    rows, expected = _rows(str(out)), _rows(reference)
    def keys(rows, root):  # the same archive, copied to two places
        return sorted((os.path.relpath(r["source"], root), r["scan_id"], r["formula"] or "") for r in rows)

    assert len(rows) == len(expected) and keys(rows, archive) == keys(expected, labelled[0])
    table = open_table(settings)
    data_files = list(out.glob("table/data/*.parquet"))
    referenced = set(table.inspect.all_files().column("file_path").to_pylist())
    orphans = [f for f in data_files if f"file://{f}" not in referenced]
    assert remove_orphans(table, settings, older_than_s=0) == len(orphans)
    assert _rows(str(out)) and len(list(out.glob("table/data/*.parquet"))) == len(data_files) - len(orphans)


@pytest.mark.slow
def test_a_stalled_run_is_planned_again_and_commits_once(ray_cluster, archive, model_file, tmp_path):
    """Another tenant takes the cluster's CPUs mid-night: the inference actors cannot start and no block
    moves. After ``stall_timeout`` the run is planned again (nothing committed meanwhile); the CPUs come
    back and the table gets exactly one row per stack."""
    from raypipe.labels.job import label_archive

    @ray_cluster.remote(num_cpus=3.5)
    class Tenant:
        def ready(self) -> bool:
            return True

    tenant = Tenant.remote()
    assert ray_cluster.get(tenant.ready.remote(), timeout=60)
    said: list[str] = []

    def progress(message: str) -> None:
        said.append(message)
        if "no progress for" in message:
            ray_cluster.kill(tenant)  # the CPUs come back before the second plan

    from ray.data import DataContext

    out, before = str(tmp_path / "labels"), DataContext.get_current().execution_no_progress_timeout_s
    try:
        summary = label_archive(str(archive), out, model=model_file, run_date="2026-11-24", settle=0,
                                stall_timeout=30, progress=progress)
    finally:
        ray_cluster.kill(tenant)
        DataContext.get_current().execution_no_progress_timeout_s = before  # the later tests' default
    assert sum("no progress for 30 s" in m for m in said) == 1, said
    assert (summary.ok, summary.errors) == (N_GOOD, 2)
    rows = _rows(out)
    assert len(rows) == N_GOOD + 2 and len({_key(r) for r in rows}) == len(rows)
    assert {r["run_id"] for r in rows} == {summary.run_id}


def test_nightly_job_twice_on_s3_same_rows(ray_cluster, s3_server, archive, model_file, capfd, tmp_path):
    from raypipe.labels.job import label_archive
    from raypipe.storage import filesystem

    fs, _ = filesystem("s3://raypipe-test", s3_server)
    fs.put(str(archive) + "/", "raypipe-test/scans/", recursive=True)
    catalog = f"sqlite:///{tmp_path}/s3-catalog.db"
    first = label_archive("s3://raypipe-test/scans", "s3://raypipe-test/labels", model=model_file,
                          run_date="2026-11-24", storage_options=s3_server, catalog=catalog, settle=0)
    assert (first.ok, first.errors) == (N_GOOD, 2)
    rows = _rows("s3://raypipe-test/labels", s3_server, catalog)
    second = label_archive("s3://raypipe-test/scans", "s3://raypipe-test/labels", model=model_file,
                           run_date="2026-11-24", storage_options=s3_server, catalog=catalog, settle=0)
    assert second.units_new == 0
    assert sorted(map(_key, _rows("s3://raypipe-test/labels", s3_server, catalog))) == sorted(map(_key, rows))
    assert all(r["source"].startswith("s3://raypipe-test/scans/") for r in rows)
    assert fs.find("raypipe-test/labels/table/data")  # the table's data is in the bucket
    captured = capfd.readouterr()
    secret = s3_server["secret"]
    assert secret not in captured.out + captured.err + repr(first.as_dict())
    assert all(secret not in (r["error"] or "") for r in rows)


def test_storage_redacts_credentials_but_not_paths(monkeypatch):
    from raypipe.storage import redact, split_userinfo

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    text = redact("failed with secret: s3cr3t-value")
    assert "s3cr3t-value" not in text
    # a folder named like a setting is a real path: stored as it is
    assert redact("/data/monkey=3 token=abc/scan") == "/data/monkey=3 token=abc/scan"
    uri, key, secret = split_userinfo("s3://AKIAKEY1:VerySecret42@bucket/scans")
    assert (uri, key, secret) == ("s3://bucket/scans", "AKIAKEY1", "VerySecret42")
    assert redact("s3://AKIAKEY1:VerySecret42@bucket/x and VerySecret42") == "s3://***@bucket/x and ***"


@pytest.mark.parametrize("centres", [False, True])
def test_a_model_on_another_grid_labels_on_its_own_grid(ray_cluster, tmp_path, centres):
    """The grid comes from the model: a 64-pixel model labels (it used to abort the whole job). A model with
    the atom-centre output sends its maps from the inference actors to the extraction, which reads atoms
    only at their peaks: a map without any reads no atom, whatever the depictions show."""
    import torch

    from raypipe.chem.depiction import decode_png
    from raypipe.pipelines.predict import predict_dataset

    config = ModelConfig(size=64, fov=18.0, ngf=8, ndf=8, conv3d_channels=4, head="palette", centres=centres)
    torch.manual_seed(0)
    generator = define_G(config)
    if centres:  # a centre map of ~0 everywhere
        torch.nn.init.zeros_(generator.centres[-1].weight)
        torch.nn.init.constant_(generator.centres[-1].bias, -20.0)
    path = save_model(generator, config, tmp_path / "m64.safetensors", name="grid64")
    archive = tmp_path / "scans"  # the PNG export and the archive's first three stacks
    shutil.copytree(EXAMPLE_SCANS / "anthracene_png_export", archive / "png")
    from raypipe.scans.archive import read_archive, write_archive

    write_archive(archive / "three.h5", list(read_archive(EXAMPLE_SCANS / "sample_scans.h5"))[:3])
    if centres:  # the same stages, run here one after the other (the pipeline itself runs in the other case)
        rows = _stages_by_hand(str(archive), str(path))
    else:
        rows = predict_dataset(str(archive), model=str(path)).take_all()
    assert len(rows) == 4 and all(r["depiction"] for r in rows)
    assert {decode_png(r["depiction"]).shape for r in rows} == {(64, 64, 3)}
    drawn = [r for r in rows if decode_png(r["depiction"]).any()]
    assert drawn
    if centres:
        assert all(r["status"] == "ok" and not r["atoms"] for r in rows), {r["error"] for r in rows}
    else:
        # an untrained network paints noise: more balls than a molecule has, an error row that keeps the
        # picture and says why (reading it used to pair thousands of blobs for minutes a stack)
        for r in drawn:
            assert r["atoms"] or (r["status"], r["error_kind"]) == ("error", "permanent"), r["error"]
            assert r["status"] == "ok" or "DepictionError" in r["error"] and "MAX_ATOMS" in r["error"]


def _stages_by_hand(uri: str, model: str) -> list[dict]:
    """What predict_dataset does, stage after stage in this process: expand, load, predict, extract."""
    from raypipe.model.files import ModelFile
    from raypipe.pipelines.predict import find_unit_rows
    from raypipe.pipelines.stages import Predictor, StageContext, _column, expand, extract, load

    file = ModelFile.open(model)
    ctx = StageContext(file.config.window, file.config.n_slices, model=file)
    rows = [load(row, ctx) for unit in find_unit_rows(uri)[0] for row in expand(unit, ctx)]
    batch = {key: _column([r[key] for r in rows]) for key in rows[0]}
    return extract(Predictor(ctx, threads=1)(batch), ctx).to_pylist()


def test_labelling_runs_under_a_small_object_store_budget(ray_cluster, model_file, monkeypatch):
    """Backpressure: the dataset carries an object-store budget (OBJECT_STORE_MB per inference actor);
    even a 1 MiB budget, smaller than one block, labels every stack (Ray Data still runs one at a time)."""
    import raypipe.pipelines.predict as predict

    monkeypatch.setattr(predict, "OBJECT_STORE_MB", 1)
    rows = predict.predict_dataset(str(EXAMPLES / "scans"), model=model_file)
    limit = rows.context.execution_options.resource_limits.object_store_memory
    assert 2**20 <= limit <= 8 * 2**20  # 1 MiB per actor, a few actors at most on the test cluster
    labelled = rows.take_all()
    assert len(labelled) == 16 and {r["status"] for r in labelled} == {"ok"}, {r["error"] for r in labelled}


@pytest.mark.slow
def test_the_local_ray_gives_its_workers_the_memory_settings_unless_the_user_set_them(tmp_path):
    """``ensure_ray`` starts a local Ray whose workers run with ``LOCAL_RAY_ENV`` (metrics not collected,
    two malloc arenas, idle workers kept); a value the user exported wins. Its own Ray, in a child
    process: the settings are read when Ray's processes start."""
    import json

    from raypipe.pipelines.cluster import LOCAL_RAY_ENV

    probe = ("import json, os, ray\n"
             "from raypipe.pipelines.cluster import LOCAL_RAY_ENV, ensure_ray\n"
             "ensure_ray()\n"
             "seen = ray.get(ray.remote(lambda: {k: os.environ.get(k) for k in LOCAL_RAY_ENV}).remote())\n"
             "ray.shutdown()\n"
             "print(json.dumps(seen))\n")
    env = {k: v for k, v in os.environ.items() if k not in LOCAL_RAY_ENV and k != "RAY_ADDRESS"}
    env["MALLOC_ARENA_MAX"] = "3"  # the user's own
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=180, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {**LOCAL_RAY_ENV, "MALLOC_ARENA_MAX": "3"}
    assert seen["RAY_enable_metrics_collection"] == "0"


def test_model_files_in_object_storage(s3_server, tmp_path):
    """A model written to s3:// (as the training RayJob does) is loaded from there by its URI."""
    from raypipe.model.files import model_config, model_tag
    from raypipe.model.inference import load_model

    config = ModelConfig(size=64, ngf=8, ndf=8, conv3d_channels=4)
    G = define_G(config).eval()
    uri = "s3://raypipe-test/models/tiny.safetensors"
    assert G.save(uri, name="tiny", storage_options=s3_server) == uri
    local = G.save(tmp_path / "tiny.safetensors", name="tiny")
    model = load_model(uri, device="cpu", storage_options=s3_server)
    assert model.tag == model_tag(uri, s3_server) and model.tag.startswith("tiny@")
    assert model_config(uri, s3_server).size == 64
    x = np.random.default_rng(0).normal(size=(1, 10, 64, 64)).astype(np.float32)
    assert np.array_equal(model.predict(x), load_model(local, device="cpu").predict(x))
    with pytest.raises(FileNotFoundError, match="no such model file"):
        load_model("s3://raypipe-test/models/absent.safetensors", storage_options=s3_server)


def _batch(n_ok: int = 1, bad_images=None) -> dict:
    """A hand-built batch as :func:`raypipe.read_scans` returns it: ``n_ok`` good rows, then one bad."""
    from helpers import synthetic_stack

    from raypipe.pipelines.stages import NO_FACTS

    good = synthetic_stack(10, 64)
    images = [good] * n_ok + [bad_images if bad_images is not None else good]
    n = len(images)
    column = lambda value: np.array([value] * n + [None], dtype=object)[:-1]  # noqa: E731
    batch = {key: column(value) for key, value in NO_FACTS.items()}
    return {**batch, "unit": column("u"), "unit_fingerprint": column("f"), "source": column("s"),
            "scan_id": np.array([f"id{k}" for k in range(n)], dtype=object), "format": column("image-folder"),
            "n_images": np.array([10] * n), "images": np.array(images + [None], dtype=object)[:-1],
            "status": column("ok"), "error": column(""), "error_kind": column("")}


def test_each_stage_turns_a_bad_row_into_an_error_row_and_keeps_the_others(tmp_path):
    """The stages of predict_dataset, on hand-built batches: a failure is that row's, with its reason."""
    from raypipe.model.files import ModelFile
    from raypipe.pipelines.stages import Predictor, StageContext, extract, preprocess_batch
    from raypipe.window import DEFAULT_WINDOW

    config = ModelConfig.preset("small")
    path = save_model(define_G(config), config, tmp_path / "m.safetensors", name="m")
    ctx = StageContext(DEFAULT_WINDOW, 10, model=ModelFile.open(path))
    nan = np.full((10, 64, 64), np.nan, np.float32)
    pre = preprocess_batch(_batch(2, bad_images=np.zeros((2, 3), np.float32)), ctx)
    assert list(pre["status"]) == ["ok", "ok", "error"] and pre["input"].shape == (3, 10, 128, 128)
    assert pre["error_kind"][2] == "permanent" and "ScanError" in pre["error"][2]  # not a stack: the file's fault
    assert preprocess_batch(_batch(1, bad_images=nan), ctx)["status"][1] == "error"

    predicted = Predictor(ctx, threads=1)(pre)
    assert predicted["depiction"].shape == (3, 128, 128, 3) and not predicted["depiction"][2].any()
    assert "input" not in predicted and list(predicted["model"]) == [ModelFile.open(path).tag] * 3

    predicted["depiction"][1] = np.zeros((128, 128, 3), np.uint8)
    bad = dict(predicted, depiction=np.array(list(predicted["depiction"][:1]) + [np.zeros((5, 5, 3), np.uint8)] * 2,
                                             dtype=object))
    table = extract(bad, ctx).to_pylist()
    assert [r["status"] for r in table] == ["ok", "error", "error"]
    assert "does not fit" in table[1]["error"] and table[1]["error_kind"] == "transient"  # a bug, not the file
    assert table[2]["error"] == pre["error"][2]  # an earlier stage's reason is kept


def test_object_storage_that_cannot_be_used_is_one_line_naming_the_fix(s3_server, monkeypatch, tmp_path):
    """No credentials, or an endpoint that does not answer: one line naming the URI and the fix, before Ray."""
    from raypipe.storage import StorageError, check_reachable

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(StorageError, match=r"s3://raypipe-test/scans: no S3 credentials: set AWS_ACCESS_KEY_ID"):
        check_reachable("s3://raypipe-test/scans", {"endpoint_url": s3_server["endpoint_url"]})
    with pytest.raises(StorageError, match=r"does not answer"):
        check_reachable("s3://raypipe-test/scans", {**s3_server, "endpoint_url": "http://127.0.0.1:9"})
    with pytest.raises(StorageError, match=r"the bucket 'absent' does not exist"):
        check_reachable("s3://absent/scans", s3_server)
    check_reachable("s3://raypipe-test/scans", s3_server)  # usable: nothing raised
