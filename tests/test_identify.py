"""Identification against a library: the library data set (build, resume, bad input), the first stage's
filter, the labelling column and the gallery, ``raypipe identify``, and a library on a 2-CPU local Ray."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from raypipe.resources import EXAMPLE_MOLECULES, EXAMPLE_SCANS

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["c1ccc2cc3ccccc3cc2c1", "Brc1cc(Cl)cc(Cl)c1", "O=C(O)c1ccncc1", "Fc1c(F)c(F)c(I)c(F)c1F",
         "c1ccc2ccccc2c1", "Clc1ccc(Cl)cc1", "O=C(O)c1ccccc1", "c1ccncc1", "Oc1ccccc1", "Nc1ccccc1",
         "c1ccc(-c2ccccc2)cc1", "O=C1OC(=O)c2ccccc21"]


@pytest.fixture(scope="module")
def library(ray_cluster, tmp_path_factory) -> str:
    """A small library built by the Ray job: the bundled molecules, a few more, and two lines it must refuse."""
    from raypipe.pipelines.library import build_library

    folder = tmp_path_factory.mktemp("library")
    source = folder / "molecules.smi"
    source.write_text(EXAMPLE_MOLECULES.read_text() + "".join(f"{s} extra-{k}\n" for k, s in enumerate(SMALL))
                      + "C1CC not-a-molecule\n[Na+].[Cl-] salt\n")
    said: list[str] = []
    summary = build_library(str(source), str(folder / "lib"), shard_size=8, progress=said.append)
    assert summary.rejects >= 2 and {r["id"] for r in summary.first_rejects} >= {"not-a-molecule", "salt"}
    assert "refused not-a-molecule" in summary.report() and summary.rows + summary.rejects == 8 + len(SMALL) + 2
    return str(folder / "lib")


def test_the_filter_ranks_a_molecules_own_clean_reading_first(library):
    """Stage 1 on clean depictions: each library molecule's depiction, read back, finds that molecule first."""
    from raypipe.chem.depiction import render_depiction
    from raypipe.chem.graph import extract_graph
    from raypipe.chem.molecule import Molecule
    from raypipe.identify.library import Library
    from raypipe.identify.search import Query, filter_scores

    lib = Library.open(library)
    assert len(lib) >= 15 and lib.distances.shape == (len(lib), 81)
    for smiles in lib.smiles:
        graph = extract_graph(render_depiction(Molecule.from_smiles(smiles), lib.window), lib.window)
        query = Query.of(graph, 1.0, None, lib.window, scale_known=False)
        score = filter_scores(lib, query)["score"]
        assert lib.smiles[int(np.argmax(score))] == smiles  # itself (or its duplicate under another name)


def test_the_filter_forgives_an_element_confusion_and_its_weights_are_features(library):
    """A reading that takes the oxygens for nitrogens (a confusion of AFM readings the field reports), or a
    chlorine for a bromine, still finds its molecule first; the fitted weights name features the filter
    computes, similarities raise a score and differences lower it, in the linear mix and in the hidden layer
    (so a molecule's own clean reading always scores best)."""
    from raypipe.chem.depiction import render_depiction
    from raypipe.chem.graph import extract_graph
    from raypipe.chem.molecule import Molecule
    from raypipe.identify.library import Library
    from raypipe.identify.search import FILTER, Query, filter_features, filter_scores

    lib = Library.open(library)
    truth = "O=C(O)c1ccncc1"
    graph = extract_graph(render_depiction(Molecule.from_smiles(truth), lib.window), lib.window)
    assert sum(a.element == "O" for a in graph.atoms) == 2
    graph.atoms = [dataclasses.replace(a, element="N") if a.element == "O" else a for a in graph.atoms]
    query = Query.of(graph, 0.0, None, lib.window, scale_known=False)
    scores = filter_scores(lib, query)
    assert lib.smiles[int(np.argmax(scores["score"]))] == truth
    assert abs(float(scores["score"].sum()) - 1.0) < 1e-6
    truth = "Clc1ccc(Cl)cc1"  # one chlorine read as bromine: the halogens' count still agrees
    graph = extract_graph(render_depiction(Molecule.from_smiles(truth), lib.window), lib.window)
    first = next(k for k, a in enumerate(graph.atoms) if a.element == "Cl")
    graph.atoms[first] = dataclasses.replace(graph.atoms[first], element="Br")
    features = filter_features(lib, Query.of(graph, 0.0, None, lib.window, scale_known=False))
    assert features["halogen_difference"][list(lib.smiles).index(truth)] == 0
    scores = filter_scores(lib, Query.of(graph, 0.0, None, lib.window, scale_known=False))
    assert lib.smiles[int(np.argmax(scores["score"]))] == truth
    from raypipe.chem.molgraph import MolGraph

    empty = Query.of(MolGraph([], []), 0.0, None, lib.window, scale_known=False)  # the model read nothing
    empty.spread = (3.0, 1.5)
    blind = filter_scores(lib, empty)
    assert np.isfinite(blind["logit"]).all() and np.argmax(blind["score"]) == np.argmax(blind["shape"])
    names = set(filter_features(lib, query))
    assert set(FILTER["weights"]) <= names and len(FILTER["weights"]) >= 5
    def difference(name: str) -> bool:
        return name.removesuffix("_confident").endswith(("difference", "excess", "difference_sq"))

    for name, weight in FILTER["weights"].items():
        assert weight <= 0 if difference(name) else weight >= 0, name
    hidden = FILTER.get("hidden")
    if hidden:  # monotone: each feature enters oriented (its scale's sign), with weights >= 0
        assert set(hidden["features"]) <= names
        assert all((s < 0) == difference(n) for n, s in zip(hidden["features"], hidden["scale"]))
        assert (np.asarray(hidden["weight"]) >= 0).all() and (np.asarray(hidden["out"]) >= 0).all()


def test_the_screen_finds_by_depiction_what_the_filter_ranked_low_and_keeps_the_depictions(library, tmp_path):
    """The depiction screen between the filter and the simulation match: a molecule the filter put last is
    brought up by its depiction (after the filter's reserved best); every screened molecule's depiction
    score is kept for the match, and its depiction is written to the cache folder at first use, so that a
    later run needs no conformer for it (and simulates nothing)."""
    from raypipe.chem.depiction import render_depiction
    from raypipe.chem.molecule import Molecule
    from raypipe.identify.candidates import CandidateCache
    from raypipe.identify.library import Library
    from raypipe.identify.search import screen

    lib = Library.open(library)
    truth = "c1ccc2cc3ccccc3cc2c1"
    depiction = render_depiction(Molecule.from_smiles(truth, seed=0), lib.window)
    last = lib.smiles == truth  # (listed twice in the library, under two names)
    order = np.concatenate([np.flatnonzero(~last), np.flatnonzero(last)])  # a filter that ranks the truth last
    cache = CandidateCache(lib.window, tmp_path / "cache", conformers=1)
    kept, scores = screen(lib, order, depiction, cache, keep=3, reserve=1)
    assert len(kept) == 3 and kept[0] == order[0] and lib.smiles[kept[1]] == truth, [lib.smiles[i] for i in kept]
    assert max(scores, key=scores.get) == truth and len(scores) == len(set(lib.smiles))
    files = list((tmp_path / "cache").glob("*.npz"))
    assert len(files) == len(scores) and cache.simulated == 0
    again = CandidateCache(lib.window, tmp_path / "cache", conformers=1)  # a later run: from the folder
    candidate = again.get(truth)
    assert candidate.molecules == [] and len(candidate.depictions) == 1 and candidate.simulations == []
    assert np.array_equal(candidate.depictions[0], cache.get(truth).depictions[0])
    kept_again, scores_again = screen(lib, order, depiction, again, keep=3, reserve=1)
    assert list(kept_again) == list(kept) and scores_again == scores and again.simulated == 0
    kept, _ = screen(lib, order, depiction, again, keep=2, reserve=5)  # never more than asked for
    assert list(kept) == list(order[:2])
    kept, scores = screen(lib, order, np.zeros_like(depiction), again, keep=3)  # nothing read: the filter's
    assert list(kept) == list(order[:3]) and scores == {}


def test_the_scans_shape_is_measured_on_the_scan_not_on_the_padding_around_it():
    """An exported scan that is not square (or smaller than the window) is padded by preprocessing; the
    molecule's spread comes from the scan's own pixels: an elongated blob (a Gaussian of 2.2 x 1.1 Å) on a
    tall 120 x 70 px scan measures the same at an unknown scale (padded to a square) and at a known one
    (padded into the window), and its ratio stays near 2, not the padding's."""
    from raypipe.identify.search import scan_shape
    from raypipe.scans.preprocess import preprocess
    from raypipe.scans.stack import ScanStack
    from raypipe.window import Window

    window = Window()
    pixel = 0.1  # Å per pixel of the scan
    yy, xx = np.mgrid[:120, :70]
    rng = np.random.default_rng(0)
    blob = np.exp(-0.5 * (((yy - 60) * pixel / 2.2) ** 2 + ((xx - 35) * pixel / 1.1) ** 2))
    # the background's frequency shift rises as the tip retracts (so the padding, the stack's median, stands
    # apart from the farther slices' background, as in real exports)
    images = np.stack([-5.0 * blob / (1 + 0.2 * k) + rng.normal(0, 0.05, blob.shape) - 6.0 + 0.6 * k
                       for k in range(10)])
    spreads = {}
    for fov in (None, [70 * pixel, 120 * pixel]):
        x = preprocess(ScanStack(images, None, {"fov": fov}), window=window)
        spreads[fov is None] = scan_shape(x, window)
    for unknown, (long, short) in spreads.items():
        assert 1.7 < long / short < 2.4, (unknown, long, short)
    long, short = spreads[False]  # the scale known: in Å (the masked blob's spread, short of the Gaussian's)
    assert 1.2 < long < 2.2 and 0.6 < short < 1.1, (long, short)


def test_a_library_of_another_window_or_no_library_is_refused_in_one_line(library, tmp_path, capsys):
    from raypipe.cli import main
    from raypipe.identify.library import Library
    from raypipe.window import Window

    with pytest.raises(ValueError, match="built for a 18 Å / 128 px window, the model reads 25 Å"):
        Library.open(library, window=Window(size=128, fov=25.0))
    assert main(["label", str(EXAMPLE_SCANS), "--out", str(tmp_path / "o"), "--library", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a raypipe library" in err and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_library_build_killed_midway_resumes(ray_cluster, tmp_path):
    """Killed after its first shard, the build continues with the others on the next run, and the library is
    the one a build without a kill makes."""
    from raypipe.identify.library import Library

    source = tmp_path / "molecules.smi"
    source.write_text("".join(f"{s} m{k}\n" for k, s in enumerate(SMALL * 3)))
    out = tmp_path / "lib"
    address = ray_cluster.get_runtime_context().gcs_address
    job = subprocess.Popen([sys.executable, "-c", (
        f"import ray; ray.init(address={address!r}, log_to_driver=False)\n"
        "from raypipe.pipelines.library import build_library\n"
        f"build_library({str(source)!r}, {str(out)!r}, shard_size=4, num_actors=1)")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("shards/shard-*.parquet")):
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    done = len(list(out.glob("shards/shard-*.parquet")))
    assert 1 <= done < 9 and not (out / "manifest.json").exists()
    from raypipe.pipelines.library import build_library

    summary = build_library(str(source), str(out), shard_size=4)
    assert summary.shards == 9 and summary.shards_skipped >= done and summary.rows == len(SMALL) * 3
    assert sorted(Library.open(str(out)).ids) == sorted(f"m{k}" for k in range(len(SMALL) * 3))
    with pytest.raises(ValueError, match="other settings"):
        build_library(str(source), str(out), shard_size=4, seed=1)


@pytest.mark.slow
def test_rows_and_the_gallery_name_the_librarys_matches(ray_cluster, library, model_file, tmp_path):
    """Labelling with a library: each ok row's ``identified`` holds its best matches with their scores; the
    gallery draws the top three beside the scan and numbers the list once."""
    from raypipe.labels.job import label_archive
    from raypipe.labels.table import read_labels

    out = tmp_path / "labels"
    summary = label_archive(str(EXAMPLE_SCANS / "anthracene_png_export"), str(out), model=model_file, settle=0,
                            library=library, shortlist=3, fov=(18.0,))
    assert summary.ok == 1 and summary.errors == 0 and summary.gallery
    rows = read_labels(str(out)).to_pylist()
    for row in rows:
        found = row["identified"]
        assert [m["rank"] for m in found] == list(range(1, len(found) + 1)) and 1 <= len(found) <= 3
        assert all(0 <= m["simulation_score"] <= 1 and 0 <= m["filter_score"] <= 1 for m in found)
        assert found[0]["score"] == max(m["score"] for m in found) and found[0]["name"]
    page = Path(summary.gallery).read_text()
    assert page.count("best matches in the library") == len(rows)
    assert "1. 1." not in page and "unreliable reading" in page  # the tiny model's empty reading


@pytest.mark.slow
def test_identify_command_and_a_library_on_a_two_cpu_local_ray(library, tmp_path):
    """On the default local Ray of a 2-core laptop (2 CPUs) the nightly job labels with a library (it used to
    wait forever with the candidate ranking's actor holding the CPU the reads needed); ``raypipe identify``
    ranks one scan and writes its page."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAYPIPE_LOCAL_CPUS"] = "2"
    done = subprocess.run([sys.executable, "-m", "raypipe.cli", "label", str(EXAMPLE_SCANS / "anthracene_png_export"),
                           "--out", str(tmp_path / "labels"), "--settle", "0", "--library", library,
                           "--shortlist", "4", "--json", "-q"], capture_output=True, text=True, timeout=900,
                          env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["ok"] == 1
    one = subprocess.run([sys.executable, "-m", "raypipe.cli", "identify", str(EXAMPLE_SCANS / "anthracene_png_export"),
                          "--candidates", str(EXAMPLE_MOLECULES), "--fov", "18", "--page", str(tmp_path / "p.html")],
                         capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    assert "1. anthracene" in one.stdout and (tmp_path / "p.html").read_text().count("<figure>") >= 3


def test_the_report_warns_when_an_unsure_reading_of_an_unscaled_scan_ranks_a_library():
    """A real scan read with a confidence near 0 and no scale: the library ranking rests on the scan's shape
    alone, and the report says so and points to a candidate list; a sure reading, a known scale or a
    candidate list get no such note."""
    from raypipe.identify.search import UNSURE, Identification

    def report(confidence, scale_known=False, library="s3://lab/library"):
        match = {"rank": 1, "name": "m", "smiles": "c1ccccc1", "score": 0.5, "simulation_score": 0.5,
                 "depiction_score": 0.5, "filter_score": 0.001}
        return Identification("scan", "C3H2N4O", confidence, None, "unknown", [match], np.zeros((1, 1, 3)),
                              np.zeros((1, 1, 1)), 1.0, 0, library, scale_known=scale_known).report()

    assert "--candidates" in report(0.0004) and "confidence 0.0004" in report(0.0004)
    assert "--candidates" in report(None)
    assert "--candidates" not in report(UNSURE * 2)
    assert "--candidates" not in report(0.0004, scale_known=True)
    assert "--candidates" not in report(0.0004, library="the candidates")
