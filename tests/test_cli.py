"""The command line and the shipped model: what `make run` does, and `raypipe evaluate`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from raypipe.cli import main
from raypipe.model.inference import load_model
from raypipe.resources import SHIPPED_MODEL
from raypipe.labels.table import read_labels
from raypipe.resources import EXAMPLES



def test_shipped_model_loads_and_predicts():
    import numpy as np

    model = load_model(device="cpu")
    assert model.name == "raypipe-small" and SHIPPED_MODEL.stat().st_size < 10 * 2**20
    assert {"data", "steps", "hardware"} <= set(model.notes)
    out = model.predict(np.zeros((2, 10, 128, 128), np.float32))
    assert out.shape == (2, 128, 128, 3) and out.dtype == np.uint8


@pytest.fixture(scope="module")
def labelled(ray_cluster, tmp_path_factory):
    """`raypipe label` on the bundled scans with the shipped model, once for the tests that read its output."""
    import contextlib
    import io

    tmp = tmp_path_factory.mktemp("labelled")
    scans = tmp / "scans"
    shutil.copytree(EXAMPLES / "scans", scans)
    out = tmp / "labels"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["label", str(scans), "--out", str(out), "--run-date", "2026-11-24", "--settle", "0"])
    return code, printed.getvalue(), scans, out


def test_label_command_on_the_bundled_scans(labelled, capsys):
    code, printed, scans, out = labelled
    assert code == 0 and "16 stacks labelled" in printed and "16 ok, 0 errors" in printed
    rows = read_labels(str(out), columns=["run_date", "status", "model"]).to_pylist()
    assert len(rows) == 16 and {r["run_date"] for r in rows} == {"2026-11-24"}
    page = next((out.parent / "labels-gallery").glob("run-*.html")).read_text()  # beside the table, not inside
    assert page.count("class='card'") == 16 and rows[0]["model"].split("@")[0] in page
    index = (out.parent / "labels-gallery" / "index.html").read_text()
    assert "2026-11-24" in index and "16 scans: 16 ok, 0 errors" in index and "formulas right" in index
    truth = read_labels(str(out), columns=["confidence", "formula", "truth_formula"]).to_pylist()
    right = sum(r["formula"] == r["truth_formula"] for r in truth) / len(truth)
    assert abs(sum(r["confidence"] for r in truth) / len(truth) - right) <= 0.2  # the shipped model is calibrated
    assert main(["label", str(scans), "--out", str(out), "--settle", "0", "--json"]) == 0  # nothing new
    assert '"units_new": 0' in capsys.readouterr().out and read_labels(str(out)).num_rows == 16


def test_evaluate_command(tmp_path, capsys):
    import json

    gallery = tmp_path / "g.png"
    assert main(["evaluate", "--data", str(EXAMPLES / "sim-sample"), "--split", "train", "--limit", "6",
                 "--gallery", str(gallery)]) == 0
    result = json.loads(capsys.readouterr().out)
    bins = result["by_corrugation"].values()
    assert result["n"] == 6 == sum(b["n"] for b in bins) and result["split"] == "train"
    assert result["total"] == pytest.approx(sum(b["n"] * b["total"] for b in bins if b["n"]) / 6)
    assert set(result["by_corrugation"]) == {"0-50 pm", "50-100 pm", "100-150 pm", ">150 pm"}
    assert sum(sum(c.values()) for c in result["confusion"].values()) >= 6 and gallery.stat().st_size > 1000


# --- a scientist's first hour (issue 17) ---------------------------------------------------------------
def _raypipe(*args: str, timeout: float = 300):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "raypipe.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=EXAMPLES.parents[1])


def test_missing_and_empty_inputs_are_one_line_without_ray(tmp_path):
    import time

    start = time.perf_counter()
    missing = _raypipe("label", str(tmp_path / "nope"), "--out", str(tmp_path / "o1"))
    (tmp_path / "empty").mkdir()
    empty = _raypipe("label", str(tmp_path / "empty"), "--out", str(tmp_path / "o2"))
    model = _raypipe("label", str(EXAMPLES / "scans"), "--out", str(tmp_path / "o3"), "--model", str(tmp_path / "m"))
    assert time.perf_counter() - start < 45  # three commands, none starting Ray
    assert missing.returncode == 1 and missing.stderr.strip() == f"raypipe label: error: {tmp_path / 'nope'}: no such file, folder or prefix"
    assert empty.returncode == 0 and "nothing to label" in empty.stdout and not (tmp_path / "o2").exists()
    assert model.returncode == 1 and len(model.stderr.strip().splitlines()) == 1 and "no such model file" in model.stderr
    for done in (missing, empty, model):
        assert "Traceback" not in done.stderr and "Ray instance" not in done.stdout + done.stderr


def test_version_help_and_usage_errors():
    from raypipe import __version__

    assert _raypipe("--version").stdout.strip() == f"raypipe {__version__}"
    helptext = _raypipe("label", "--help").stdout
    assert "(default: out/labels)" in helptext and "exit status" in helptext and ":class:" not in helptext
    assert "(default: test)" in _raypipe("evaluate", "--help").stdout
    assert _raypipe("label", "--frobnicate").returncode == 2


@pytest.mark.slow
def test_label_run_is_quiet_and_short(tmp_path):
    done = _raypipe("label", str(EXAMPLES / "scans"), "--out", str(tmp_path / "labels"), "--settle", "0")
    assert done.returncode == 0, done.stderr
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) <= 40 and any("16 ok, 0 errors" in line for line in lines), lines
    for noise in ("core_worker.cc", "INFO", "WARNING", "Deprecat", "Started a local Ray"):
        assert not any(noise in line for line in lines), (noise, lines)


def test_depict_never_deletes_a_users_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "important.txt").write_text("keep me")
    refused = _raypipe("depict", "--out", str(folder))
    assert refused.returncode == 1 and "raypipe did not write" in refused.stderr
    assert (folder / "important.txt").read_text() == "keep me" and len(list(folder.iterdir())) == 1
    out = tmp_path / "depictions"
    assert _raypipe("depict", "--out", str(out)).returncode == 0 and (out / "graphs.jsonl").exists()
    assert _raypipe("depict", "--out", str(out)).returncode == 0  # its own folder: replaced
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_evaluate_names_the_splits_and_writes_json_without_nan(capsys):
    import json

    assert main(["evaluate", "--data", str(EXAMPLES / "sim-sample")]) == 1
    assert "it holds train (12 rows), val (3 rows)" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(EXAMPLES / "sim-sample"), "--split", "all"]) == 0
    result = json.loads(capsys.readouterr().out)  # strict JSON: NaN would not parse with allow_nan off below
    json.dumps(result, allow_nan=False)
    assert result["n"] == 15 and result["by_corrugation"]["50-100 pm"]["n"] == 0


def test_output_columns_are_described_with_units():
    from raypipe.pipelines.schema import OUTPUT_SCHEMA

    docs = {f.name: (f.metadata or {}).get(b"doc", b"").decode() for f in OUTPUT_SCHEMA}
    assert all(docs.values()), [k for k, v in docs.items() if not v]
    assert docs["amplitude"].endswith("[Å]") and docs["stiffness"].endswith("[N/m]")
    bond = OUTPUT_SCHEMA.field("bonds").type.value_type
    assert {bond.field(k).name for k in range(bond.num_fields)} == {"i", "j", "order", "confidence"}


def _chromium() -> str | None:
    import shutil as sh

    return sh.which("chromium") or sh.which("chromium-browser") or sh.which("google-chrome")


@pytest.mark.slow
def test_gallery_in_a_real_browser(labelled, tmp_path):
    """The run's gallery as a person sees it: headless Chromium loads it, runs its script, shows one card
    per row, filters by status and truth, and every image has a visible caption and a scale bar in Å."""
    import re
    import subprocess

    import pytest

    from raypipe.reports.gallery import run_gallery

    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium; .ci/run installs it)")
    out = labelled[3]
    rows = read_labels(str(out)).to_pylist()
    run_id = rows[0]["run_id"]
    page = run_gallery(rows, tmp_path / "gallery", run_id, page_size=10)

    def dom(url: str) -> str:
        done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    first = dom(page.as_uri())
    assert re.search(r'data-shown="10"', first) and first.count('class="card') == 10  # bounded: 16 rows, 2 pages
    second = dom((page.parent / page.name.replace(".html", "-p2.html")).as_uri())
    assert second.count('class="card') == 6
    assert "closest | farthest slice" in first and "predicted depiction" in first and ">truth<" in first
    assert "elements:" in first and "formula right on" in first and "5 Å" not in first  # the bar is in the images
    wrong = dom(page.as_uri() + "?truth=right")
    assert re.search(r'data-shown="(\d+)"', wrong).group(1) == str(sum(
        r["formula"] == r["truth_formula"] for r in rows[:10] if r["truth_formula"]))
    confident = dom(page.as_uri() + "?minconf=0.5")
    assert re.search(r'data-shown="(\d+)"', confident).group(1) == str(sum(
        (r["confidence"] or 0) >= 0.5 for r in rows[:10]))  # an unknown confidence is not >= 0.5
    index = dom((page.parent / "index.html").as_uri())
    assert run_id in index
