"""Candidate ranking: which of a few molecules a scan shows (issue 12)."""

from __future__ import annotations

import pytest

import json
import shutil
from pathlib import Path

import numpy as np

from raypipe.scans.archive import read_archive
from raypipe.resources import EXAMPLES

CANDIDATES = ["Brc1cc(Cl)cc(Cl)c1", "c1ccc2cc3ccccc3cc2c1", "OC(=O)c1ccncc1"]


@pytest.mark.slow
def test_simulation_match_finds_the_molecule_and_the_cache_simulates_once(tmp_path):
    from raypipe.identify.candidates import CandidateCache, rank_candidates
    from raypipe.model.inference import load_model

    stacks = {s.metadata["truth"]["smiles"]: s for s in read_archive(EXAMPLES / "scans" / "sample_scans.h5")}
    model = load_model(device="cpu")
    cache = CandidateCache(model.config.window, tmp_path / "cache")
    for truth in ("Clc1cc(Cl)cc(Br)c1", "c1ccc2cc3ccccc3cc2c1"):
        ranked = rank_candidates(stacks[truth], CANDIDATES, model=model, cache=cache, top=3)
        assert [r["rank"] for r in ranked] == [1, 2, 3] and ranked[0]["smiles"] == truth, ranked
        assert ranked[0]["simulation_score"] > 0.9 > max(r["simulation_score"] for r in ranked[1:])
        assert all(0 <= r["depiction_score"] <= 1 for r in ranked)
    assert cache.simulated == 3 and len(list((tmp_path / "cache").glob("*.npz"))) == 3  # once per candidate
    again = CandidateCache(model.config.window, tmp_path / "cache")  # a later run: read from disk
    rank_candidates(stacks["c1ccc2cc3ccccc3cc2c1"], CANDIDATES, model=model, cache=again)
    assert again.simulated == 0
    # a candidate first used without a simulation (the depiction screen) is kept with its depictions only;
    # a later run simulates it from its SMILES (the same conformer) and keeps both
    CandidateCache(model.config.window, tmp_path / "screened").get("c1ccncc1")
    later = CandidateCache(model.config.window, tmp_path / "screened")
    candidate = later.get("c1ccncc1")
    assert candidate.molecules == [] and candidate.simulations == [] and len(candidate.depictions) == 1
    assert len(later.simulations(candidate)) == 1 and later.simulated == 1
    kept = CandidateCache(model.config.window, tmp_path / "screened").get("c1ccncc1")
    assert len(kept.simulations) == 1 and np.allclose(kept.simulations[0], candidate.simulations[0], atol=1e-2)


@pytest.mark.slow
def test_rows_rank_the_candidates_a_sidecar_names(ray_cluster, tmp_path):
    from raypipe.pipelines.predict import predict_dataset

    folder = tmp_path / "scans" / "anthracene"
    shutil.copytree(EXAMPLES / "scans" / "anthracene_png_export", folder)
    (folder / "raypipe.json").write_text(json.dumps({"fov": 18.0, "candidates": CANDIDATES[1:]}))
    rows = predict_dataset(str(tmp_path / "scans")).take_all()  # the sidecar is seen when the units are listed
    assert len(rows) == 1 and rows[0]["status"] == "ok", rows[0]["error"]
    ranked = rows[0]["candidates"]
    assert [c["rank"] for c in ranked] == [1, 2] and ranked[0]["smiles"] == "c1ccc2cc3ccccc3cc2c1"
    assert rows[0]["fov_source"] == "sidecar" and np.allclose(rows[0]["fov"], [18.0, 18.0])


def test_scale_search_reads_unknown_scale_stacks_at_several_fields_of_view(ray_cluster, tmp_path):
    from raypipe.identify.scale import FOVS
    from raypipe.pipelines.predict import predict_dataset
    from raypipe.scans.archive import write_archive

    scans = tmp_path / "scans"  # the PNG export (no scale) and two of the archive's stacks (18 Å)
    shutil.copytree(EXAMPLES / "scans" / "anthracene_png_export", scans / "png")
    write_archive(scans / "two.h5", list(read_archive(EXAMPLES / "scans" / "sample_scans.h5"))[:2])
    rows = predict_dataset(str(scans), estimate_fov=True).take_all()
    assert len(rows) == 3
    by_source = {r["fov_source"] for r in rows}
    assert by_source == {"estimated", "file"}  # the PNG export has no scale; the archive's stacks do
    estimated = [r for r in rows if r["fov_source"] == "estimated"]
    assert len(estimated) == 1 and estimated[0]["status"] == "ok" and estimated[0]["fov"][0] in FOVS
    assert all(r["fov"] == [18.0, 18.0] for r in rows if r["fov_source"] == "file")


def test_a_formula_the_sidecar_gives_makes_the_heavy_atoms_agree(ray_cluster, tmp_path):
    """The shipped model reads iodopentafluorobenzene's iodine as bromine (its training saw little iodine).
    A sidecar that gives the molecule's formula makes the graph's heavy atoms take its elements: the same
    stack reads C6HF5I beside it, C6HBrF5 without it; a malformed formula is an error row naming the sidecar."""
    from raypipe.pipelines.predict import predict_dataset
    from raypipe.scans.archive import write_archive

    stack = next(s for s in read_archive(EXAMPLES / "scans" / "sample_scans.h5")
                 if s.scan_id.startswith("iodopentafluorobenzene_A100"))
    (tmp_path / "scans").mkdir()
    for name, sidecar in (("plain", None), ("known", {"formula": "C6HF5I"}), ("bad", {"formula": "C6HXe"})):
        write_archive(tmp_path / "scans" / f"{name}.h5", [stack])
        if sidecar:
            (tmp_path / "scans" / f"{name}.h5.raypipe.json").write_text(json.dumps(sidecar))
    rows = {Path(r["unit"]).stem: r for r in predict_dataset(str(tmp_path / "scans")).take_all()}
    assert rows["plain"]["formula"] == "C6HBrF5" and rows["plain"]["truth_formula"] == "C6HF5I"
    assert rows["known"]["formula"] == "C6HF5I", rows["known"]["error"]
    assert rows["known"]["formula_counts"] is None  # the shipped model has no count output
    assert rows["known"]["known_formula"] == "C6HF5I" and rows["plain"]["known_formula"] is None
    from raypipe.reports.gallery import label_gallery

    page = label_gallery(list(rows.values()), tmp_path / "gallery.html").read_text()
    assert page.count("read to agree with the sidecar's formula C6HF5I") == 1  # the card says how it was read
    assert rows["bad"]["status"] == "error" and "bad.h5.raypipe.json" in rows["bad"]["error"]
    assert "Xe is not one of the model's elements" in rows["bad"]["error"]
