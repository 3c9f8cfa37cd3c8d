"""The command line and the shipped model: what `make run` does, and `raypipe evaluate`."""

from __future__ import annotations

import shutil
from pathlib import Path

from raypipe.cli import main
from raypipe.model.inference import SHIPPED_MODEL, load_model
from raypipe.pipelines.table import read_labels

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_shipped_model_loads_and_predicts():
    import numpy as np

    model = load_model(device="cpu")
    assert model.name == "raypipe-small" and SHIPPED_MODEL.stat().st_size < 10 * 2**20
    assert {"data", "steps", "hardware"} <= set(model.notes)
    out = model.predict(np.zeros((2, 10, 128, 128), np.float32))
    assert out.shape == (2, 128, 128, 3) and out.dtype == np.uint8


def test_label_command_on_the_bundled_scans(ray_cluster, tmp_path, capsys):
    scans = tmp_path / "scans"
    shutil.copytree(EXAMPLES / "scans", scans)
    out = tmp_path / "labels"
    assert main(["label", str(scans), "--out", str(out), "--run-date", "2026-11-24", "--settle", "0"]) == 0
    printed = capsys.readouterr().out
    assert '"ok": 16' in printed and '"errors": 0' in printed
    rows = read_labels(str(out), columns=["run_date", "status", "model"]).to_pylist()
    assert len(rows) == 16 and {r["run_date"] for r in rows} == {"2026-11-24"}
    page = (tmp_path / "labels-gallery.html").read_text()  # beside the table's folder, not inside it
    assert page.count("class='card'") == 16 and rows[0]["model"].split("@")[0] in page
    assert main(["label", str(scans), "--out", str(out), "--settle", "0"]) == 0  # nothing new: nothing added
    assert '"units_new": 0' in capsys.readouterr().out and read_labels(str(out)).num_rows == 16


def test_evaluate_command(tmp_path, capsys):
    import json

    gallery = tmp_path / "g.png"
    assert main(["evaluate", "--data", str(EXAMPLES / "sim-sample"), "--split", "train", "--limit", "6",
                 "--gallery", str(gallery)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 6 and 0 <= result["total"] <= result["composition"] <= 1
    assert set(result["by_corrugation"]) == {"0-50 pm", "50-100 pm", "100-150 pm", ">150 pm"}
    assert sum(sum(c.values()) for c in result["confusion"].values()) >= 6 and gallery.stat().st_size > 1000
