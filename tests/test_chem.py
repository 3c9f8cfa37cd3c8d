"""Molecules, depictions, graph extraction and scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rdkit import RDConfig
from scipy import ndimage

from raypipe import (DEFAULT_WINDOW, GraphAtom, MolGraph, Molecule, MoleculeError, aggregate, decode_png,
                     encode_png, extract_graph, render_depiction, score)
from raypipe.chem.elements import COLORS, ELEMENTS, palette
from raypipe.chem.graph import classify_pixels, graph_smiles

NCI = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"


def test_molecule_orientation_and_properties() -> None:
    m = Molecule.from_smiles("Brc1cc(Cl)cc(Cl)c1")
    assert m.formula == "C6H3BrCl2"
    assert m.positions[:, 2].max() == pytest.approx(0.0)
    assert m.corrugation < 0.05  # planar
    lo, hi = m.positions[:, :2].min(0), m.positions[:, :2].max(0)
    np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-9)
    assert np.ptp(m.positions[:, 0]) >= np.ptp(m.positions[:, 1])  # long axis along x
    assert len(m.charges) == len(m.elements) and abs(m.charges.sum()) < 1e-6
    again = Molecule.from_smiles("Brc1cc(Cl)cc(Cl)c1")
    np.testing.assert_array_equal(m.positions, again.positions)  # seeded: deterministic


def test_corrugation_grows_with_out_of_plane_groups() -> None:
    assert Molecule.from_smiles("CC(C)(C)c1ccccc1").corrugation > 1.8  # tert-butyl
    assert Molecule.from_smiles("c1ccc2ccccc2c1").corrugation < 0.05


@pytest.mark.parametrize("smiles, message", [
    ("[Na+].[Cl-]", "several fragments"), ("C[Si](C)(C)C", "Si not supported"), ("c1cc", "cannot parse"),
])
def test_molecule_rejects(smiles: str, message: str) -> None:
    with pytest.raises(MoleculeError, match=message):
        Molecule.from_smiles(smiles)


def test_molecule_from_files(tmp_path: Path) -> None:
    m = Molecule.from_smiles("OC(=O)c1ccccc1")
    (tmp_path / "benzoic.xyz").write_text(m.to_xyz())
    from_xyz = Molecule.from_file(tmp_path / "benzoic.xyz")
    assert from_xyz.formula == m.formula == "C7H6O2"
    assert {o for *_, o in from_xyz.bonds} & {1.5, 2.0}  # bond orders perceived from coordinates
    from rdkit import Chem
    from rdkit.Chem import AllChem
    mol = Chem.AddHs(Chem.MolFromSmiles("c1ccncc1"))
    AllChem.EmbedMolecule(mol, randomSeed=1)
    Chem.MolToMolFile(mol, str(tmp_path / "pyridine.mol"))
    assert Molecule.from_file(tmp_path / "pyridine.mol").formula == "C5H5N"
    (tmp_path / "benzoic.txt").write_text(m.to_xyz())
    with pytest.raises(MoleculeError, match="benzoic.txt: unknown molecule format"):
        Molecule.from_file(tmp_path / "benzoic.txt")


def test_palette_separates_every_element() -> None:
    colours = palette()
    d = np.linalg.norm(colours[:, None] - colours[None], axis=2) + np.eye(len(colours)) * 1e9
    assert d.min() > 90


def test_depiction_style() -> None:
    m = Molecule.from_smiles("Brc1cc(Cl)cc(Cl)c1")
    image = render_depiction(m)
    assert image.shape == (DEFAULT_WINDOW.size, DEFAULT_WINDOW.size, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, render_depiction(m))  # deterministic
    assert (image[0, 0] == 0).all()  # black background
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    assert colours == {(0, 0, 0)} | {COLORS[e] for e in ("H", "C", "Cl", "Br")}
    labels = classify_pixels(image)
    sizes = {e: ndimage.label(labels == ELEMENTS.index(e) + 1)[0].max() for e in ("Cl", "Br", "H")}
    assert sizes == {"Cl": 2, "Br": 1, "H": 3}  # one blob per atom
    assert (decode_png(encode_png(image)) == image).all()


def test_lower_atoms_are_hidden_by_higher_ones() -> None:
    base = Molecule.from_smiles("O")
    pos = np.array([[0.0, 0.0, -2.0], [0.3, 0.0, 0.0], [-3.0, 0.0, -2.0]])  # H straight above the O
    water = Molecule(base.elements, pos, base.charges, base.bonds, base.smiles)
    image = render_depiction(water)
    col, row = DEFAULT_WINDOW.to_pixels(pos[:1, :2])[0].astype(int)
    assert tuple(image[row, col]) == COLORS["H"]


def nci_sample(every: int = 10) -> list[Molecule]:
    """A fixed sample of first_5K.smi: every 10th SMILES that passes the filters (quasi-planar)."""
    smiles = [line.split()[0] for line in NCI.read_text().splitlines() if line.strip()]
    sample = []
    for s in smiles[::every]:
        try:
            m = Molecule.from_smiles(s)
        except MoleculeError:
            continue
        if m.corrugation <= 1.8:
            sample.append(m)
    return sample


def test_render_extract_round_trip_on_nci_sample() -> None:
    sample = nci_sample()
    assert len(sample) >= 60
    scores = [score(extract_graph(render_depiction(m)), m) for m in sample]
    summary = aggregate(scores, [m.corrugation for m in sample])
    # 78 of 78 on this sample; 99.4 % on the whole set (bench/roundtrip.py)
    assert summary["total"] >= 0.98, summary
    exact = [m for m, s in zip(sample, scores) if s.total]
    assert all(extract_graph(render_depiction(m)).formula == m.formula for m in exact)


@pytest.mark.parametrize("smiles, restored, case", [
    ("Cc1ccc2ccccc2c1", 0, "a methyl C half under its own top H"),
    ("NNC(=O)c1ccccc1", 1, "an NH2 nitrogen under its H, the other H fully below the N"),
    ("Cc1ccc(S)cc1", 0, "a methyl H projected over the C-H bond of another"),
    ("CC(=O)Nc1ccc(N)cc1", 0, "a methyl C partly under the amide"),
])
def test_partly_and_fully_hidden_atoms(smiles: str, restored: int, case: str) -> None:
    m = Molecule.from_smiles(smiles)
    graph = extract_graph(render_depiction(m))
    assert score(graph, m).total, case
    assert graph.smiles == m.smiles and graph.formula == m.formula
    # fully hidden hydrogens are restored with half the confidence of the atom covering them
    assert sum(a.confidence <= 0.5 for a in graph.atoms) == restored


def test_graph_smiles_needs_one_closed_shell_molecule() -> None:
    nitro = Molecule.from_smiles("[O-][N+](=O)c1ccccc1")
    graph = MolGraph.from_molecule(nitro)
    assert graph_smiles(graph) == nitro.smiles  # charge-separated groups are fine
    lone_h = MolGraph(graph.atoms + [GraphAtom("H", 5.0, 5.0)], graph.bonds)
    assert graph_smiles(lone_h) is None  # two fragments
    benzene = MolGraph.from_molecule(Molecule.from_smiles("c1ccccc1"))
    last = len(benzene.atoms) - 1  # an H: RDKit adds them after the heavy atoms
    radical = MolGraph(benzene.atoms[:-1], [b for b in benzene.bonds if last not in b])
    assert graph_smiles(radical) is None  # an H missing: an unpaired electron
    dye = Molecule.from_smiles("C[n+]1ccccc1")
    assert graph_smiles(MolGraph.from_molecule(dye)) == dye.smiles  # a cation whose N+ bears no H


def test_extracted_smiles_matches_rdkit() -> None:
    for smiles in ("c1ccc2ccccc2c1", "O=C(O)c1ccccc1", "Cc1ccc(Cl)cc1", "[O-][N+](=O)c1ccccc1"):
        m = Molecule.from_smiles(smiles)
        assert extract_graph(render_depiction(m)).smiles == m.smiles


def test_extraction_degrades_gracefully() -> None:
    m = Molecule.from_smiles("O=C(O)c1ccc(Br)cc1")
    clean = render_depiction(m).astype(np.float32)
    rng = np.random.default_rng(0)
    blurred = ndimage.gaussian_filter(clean, sigma=(1.0, 1.0, 0))
    noisy = np.clip(blurred + rng.normal(0, 40, clean.shape), 0, 255).astype(np.uint8)
    g_clean, g_noisy = extract_graph(clean.astype(np.uint8)), extract_graph(noisy)
    assert g_clean.confidence > g_noisy.confidence
    assert score(g_noisy, m).recall > 0.5
    half = clean.astype(np.uint8).copy()
    half[:, 64:] = 0  # half the molecule missing: fewer atoms, no crash
    assert 0 < len(extract_graph(half).atoms) < len(g_clean.atoms)
    empty = extract_graph(np.zeros_like(half))
    assert empty.atoms == [] and empty.smiles is None and empty.confidence == 0.0


def test_score_categories() -> None:
    m = Molecule.from_smiles("Oc1ccccc1")
    truth = MolGraph.from_molecule(m)
    assert score(truth, m).total
    swapped = MolGraph([GraphAtom("N" if a.element == "O" else a.element, a.x, a.y) for a in truth.atoms],
                       truth.bonds)
    s = score(swapped, m)
    assert s.structure and not s.composition and s.precision < 1
    missing = MolGraph(truth.atoms[1:], [(i - 1, j - 1) for i, j in truth.bonds if 0 not in (i, j)])
    s = score(missing, m)
    assert not s.structure and not s.composition and s.recall < 1 and s.precision == 1
    extra = MolGraph(truth.atoms, truth.bonds + [(0, 5)])
    s = score(extra, m)
    assert s.composition and not s.structure
    summary = aggregate([score(truth, m), s], [0.2, 1.7])
    assert summary["total"] == 0.5
    assert summary["by_corrugation"]["0-50 pm"]["total"] == 1.0
    assert summary["by_corrugation"][">150 pm"]["total"] == 0.0


def test_atoms_are_read_at_the_peaks_of_an_atom_centre_map() -> None:
    """A model with the atom-centre output: atoms at the map's peaks, elements from the depiction. On a true
    depiction it reads what the ball search reads; where the balls merge (a depiction drawn too thick, as a
    blurred prediction's rings are) the ball search loses the ring carbons and the map still has them."""
    from raypipe.training.data import centre_targets

    for smiles in ("c1ccc2cc3ccccc3cc2c1", "Brc1cc(Cl)cc(Cl)c1", "O=C(O)c1ccc(Br)cc1"):
        m = Molecule.from_smiles(smiles)
        depiction = render_depiction(m)
        centres = (centre_targets(depiction[None], DEFAULT_WINDOW)[0] + 1) / 2
        assert centres.max() == pytest.approx(1.0, abs=0.05) and np.median(centres) == 0.0
        read = extract_graph(depiction, DEFAULT_WINDOW, centres)
        assert score(read, m).total and read.smiles == extract_graph(depiction).smiles == m.smiles, smiles
        background = ~depiction.any(axis=-1)
        distance, (rows, cols) = ndimage.distance_transform_edt(background, return_indices=True)
        thick = (depiction[rows, cols] * (distance <= 3)[..., None]).astype(np.uint8)  # every ball grown by 3 px
        assert extract_graph(thick).formula != m.formula, smiles
        assert score(extract_graph(thick, DEFAULT_WINDOW, centres), m).total, smiles
    with pytest.raises(ValueError, match="centre map of shape"):
        extract_graph(depiction, DEFAULT_WINDOW, centres[:64])
    assert extract_graph(depiction, DEFAULT_WINDOW, np.zeros((128, 128), np.float32)).atoms == []


def test_a_depiction_of_noise_is_refused_quickly_not_paired_for_minutes(monkeypatch) -> None:
    """An untrained model paints palette noise: thousands of ball-like blobs. Extraction stops at MAX_ATOMS
    with a DepictionError that says why, before any pair of balls is examined for a bond (pairing them all
    took minutes a depiction), by the ball search and by a centre map full of peaks alike; 196 separate balls
    (fewer than the limit) are still read. Scoring reads the refused depiction as the empty graph."""
    import raypipe.chem.pixels as pixels
    from raypipe.chem.elements import ball_radius
    from raypipe.chem.pixels import MAX_ATOMS
    from raypipe.errors import DepictionError

    work = {"pairs": 0, "atoms kept": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            work[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(pixels, "_atom_between", counted("pairs", pixels._atom_between))
    monkeypatch.setattr(pixels, "_check_count", counted("atoms kept", pixels._check_count))

    def lattice(spacing: int) -> np.ndarray:  # hydrogen balls on a square lattice, none touching
        yy, xx = np.mgrid[0:128, 0:128] + 0.5
        d = np.hypot(xx % spacing - spacing / 2, yy % spacing - spacing / 2)
        image = np.zeros((128, 128, 3), np.uint8)
        image[d <= ball_radius("H") / DEFAULT_WINDOW.pixel] = palette()[ELEMENTS.index("H") + 1]
        return image

    peaks = np.zeros((128, 128), np.float32)
    peaks[3::6, 3::6] = 0.9  # a peak on every ball
    for centres in (None, peaks):
        work.update({"pairs": 0, "atoms kept": 0})
        with pytest.raises(DepictionError, match=f"more than {MAX_ATOMS} atoms"):
            extract_graph(lattice(6), DEFAULT_WINDOW, centres)  # 441 balls
        assert work["pairs"] == 0 and work["atoms kept"] <= MAX_ATOMS + 1, work  # stopped at the limit
    work.update({"pairs": 0, "atoms kept": 0})
    assert len(extract_graph(lattice(9)).atoms) == 14 * 14 < MAX_ATOMS
    assert work["pairs"] == 0  # H-H pairs are no bond candidates: nothing paired
    # scoring (validation, evaluate, the scale search) reads such a depiction as no molecule: wrong, not fatal
    from raypipe.chem.graph import read_graph

    assert read_graph(lattice(6)).atoms == [] and read_graph(lattice(9)).formula == "H196"


def test_the_visible_atom_figure_scores_what_a_constant_height_scan_shows() -> None:
    """Atoms more than 0.8 Å below the top one are not counted in the visible-atom figures: a reading of the
    visible part is visibly right there, while the paper's metric (rightly) calls the molecule wrong."""
    from raypipe.chem.molgraph import GraphAtom, MolGraph

    truth = MolGraph([GraphAtom("C", 0, 0), GraphAtom("O", 1.4, 0), GraphAtom("H", 0, 1.0)], [(0, 1), (0, 2)])
    read = MolGraph([GraphAtom("C", 0.1, 0), GraphAtom("O", 1.4, 0.1)], [(0, 1)])
    s = score(read, truth, heights=[0.0, -0.3, -1.2])
    assert not s.total and s.recall == 2 / 3 and s.visible_recall == 1.0 and s.visible_exact
    wrong = score(MolGraph([GraphAtom("C", 0, 0), GraphAtom("N", 1.4, 0)], [(0, 1)]), truth, heights=[0.0, -0.3, -1.2])
    assert wrong.visible_recall == 0.5 and not wrong.visible_exact
    assert score(read, truth).visible_recall is None  # heights unknown
    summary = aggregate([s, wrong], [1.6, 0.2])
    assert summary["visible_exact"] == 0.5 and summary["by_corrugation"][">150 pm"]["visible_exact"] == 1.0



def test_a_count_makes_the_elements_agree_where_the_depiction_is_torn_and_not_where_it_is_clear() -> None:
    """With a model's counts, the heavy atoms' elements are chosen together (raypipe.chem.agreement). A Br
    drawn 60 % in iodine's colour reads as I on its own; the true count brings the Br back (and the
    molecule right), a count of the misread formula keeps the misreading, and a count that contradicts a
    clearly drawn atom (every pixel one colour) does not overrule it."""
    from raypipe.chem.agreement import PENALTY, VOTE_FLOOR
    from raypipe.chem.pixels import CENTRE_VOTE_RADIUS
    from raypipe.training.data import centre_targets

    m = Molecule.from_smiles("Brc1cc(Cl)cc(Cl)c1")
    depiction = render_depiction(m)
    centres = (centre_targets(depiction[None], DEFAULT_WINDOW)[0] + 1) / 2
    truth = {e: float(m.elements.count(e)) for e in ELEMENTS}
    assert extract_graph(depiction, DEFAULT_WINDOW, centres, truth).formula == m.formula == "C6H3BrCl2"
    bromine = next(a for a in extract_graph(depiction, DEFAULT_WINDOW, centres).atoms if a.element == "Br")
    col, row = DEFAULT_WINDOW.to_pixels(np.array([[bromine.x, bromine.y]]))[0]
    rr, cc = np.mgrid[:128, :128] + 0.5
    near = np.hypot(rr - row, cc - col) <= CENTRE_VOTE_RADIUS
    torn = depiction.copy()
    is_br = near & (torn == COLORS["Br"]).all(axis=-1)
    order = np.argsort(np.hypot(rr - row, cc - col)[is_br])  # the inner 60 % of its pixels drawn as iodine
    ys, xs = np.nonzero(is_br)
    inner = order[: int(0.6 * len(order))]
    torn[ys[inner], xs[inner]] = COLORS["I"]
    alone = extract_graph(torn, DEFAULT_WINDOW, centres)
    assert alone.formula == "C6H3Cl2I"
    agreed = extract_graph(torn, DEFAULT_WINDOW, centres, truth)
    assert agreed.formula == m.formula and score(agreed, m).total and agreed.smiles == m.smiles
    misread = {**truth, "Br": 0.0, "I": 1.0}
    assert extract_graph(torn, DEFAULT_WINDOW, centres, misread).formula == "C6H3Cl2I"
    wrong = {**truth, "Cl": 0.0, "F": 2.0}  # a clear Cl costs log((1 + f) / f) > PENALTY to relabel
    assert np.log((1 + VOTE_FLOOR) / VOTE_FLOOR) > PENALTY
    assert extract_graph(depiction, DEFAULT_WINDOW, centres, wrong).formula == m.formula
    assert extract_graph(depiction, DEFAULT_WINDOW, None, wrong).formula == m.formula  # no centres: no agreement


def test_a_known_formula_also_takes_a_weak_peak_for_a_missing_atom_and_drops_a_surplus_one() -> None:
    """A known formula (a sidecar's) may change the number of heavy atoms: a chlorine whose centre peak is
    too weak to be read (0.2, under CENTRE_THRESHOLD) is taken where the formula lacks it, and a spurious
    peak on a ring bond, read as a seventh carbon, is dropped; a model's counts do neither."""
    from raypipe.chem.agreement import ElementCounts
    from raypipe.chem.pixels import CENTRE_THRESHOLD, WEAK_THRESHOLD
    from raypipe.training.data import centre_targets

    m = Molecule.from_smiles("Brc1cc(Cl)cc(Cl)c1")
    depiction = render_depiction(m)
    centres = (centre_targets(depiction[None], DEFAULT_WINDOW)[0] + 1) / 2
    known = ElementCounts.known(m.formula)
    read = extract_graph(depiction, DEFAULT_WINDOW, centres)
    chlorine = next(a for a in read.atoms if a.element == "Cl")
    col, row = DEFAULT_WINDOW.to_pixels(np.array([[chlorine.x, chlorine.y]]))[0]
    rr, cc = np.mgrid[:128, :128] + 0.5
    faint = centres.copy()
    spot = np.hypot(rr - row, cc - col) <= 4
    faint[spot] *= 0.2  # its peak now 0.2
    assert WEAK_THRESHOLD < faint[spot].max() < CENTRE_THRESHOLD
    # without a formula the ring atom that lost its chlorine needs an H nobody saw: chemistry reads it as a
    # pyridine's N (NITROGEN_GUESS); a model's counts, which keep the number of atoms, give it the H
    assert extract_graph(depiction, DEFAULT_WINDOW, faint).formula == "C5H3BrClN"
    assert extract_graph(depiction, DEFAULT_WINDOW, faint, dict(known.counts)).formula == "C6H4BrCl"  # a model's
    assert extract_graph(depiction, DEFAULT_WINDOW, faint, known).formula == m.formula

    carbons = [a for a in read.atoms if a.element == "C"]
    a, b = min(((p, q) for p in carbons for q in carbons if p is not q),
               key=lambda pq: np.hypot(pq[0].x - pq[1].x, pq[0].y - pq[1].y))  # a ring bond
    col, row = DEFAULT_WINDOW.to_pixels(np.array([[(a.x + b.x) / 2, (a.y + b.y) / 2]]))[0]
    extra = np.maximum(centres, 0.45 * np.exp(-((rr - row) ** 2 + (cc - col) ** 2) / 2))
    assert extract_graph(depiction, DEFAULT_WINDOW, extra).formula == "C7H3BrCl2"
    assert extract_graph(depiction, DEFAULT_WINDOW, extra, known).formula == m.formula


def test_a_known_formula_leaves_out_a_surplus_hydrogen() -> None:
    """A known formula's hydrogens: a spurious H drawn beside the bromine (as a corrugated molecule's
    reading shows extra ones) is read on its own, and left out where the formula says three; one fainter
    than ``WEAK_H`` chemistry leaves out by itself."""
    from raypipe.chem.agreement import ElementCounts
    from raypipe.chem.elements import ball_radius
    from raypipe.training.data import centre_targets

    m = Molecule.from_smiles("Brc1cc(Cl)cc(Cl)c1")
    depiction = render_depiction(m)
    centres = (centre_targets(depiction[None], DEFAULT_WINDOW)[0] + 1) / 2
    read = extract_graph(depiction, DEFAULT_WINDOW, centres)
    bromine = next(a for a in read.atoms if a.element == "Br")
    carbon = min((a for a in read.atoms if a.element == "C"), key=lambda a: np.hypot(a.x - bromine.x, a.y - bromine.y))
    axis = np.array([bromine.x - carbon.x, bromine.y - carbon.y])
    side = np.array([-axis[1], axis[0]]) / np.hypot(*axis)
    col, row = DEFAULT_WINDOW.to_pixels(np.array([[bromine.x, bromine.y]]) + 1.0 * side)[0]
    rr, cc = np.mgrid[:128, :128] + 0.5
    drawn, faint = depiction.copy(), centres.copy()
    drawn[np.hypot(rr - row, cc - col) <= ball_radius("H") / DEFAULT_WINDOW.pixel] = COLORS["H"]
    spot = np.exp(-((rr - row) ** 2 + (cc - col) ** 2) / 2)
    clear = np.maximum(faint, 0.6 * spot)  # above WEAK_H: kept on its own
    assert extract_graph(drawn, DEFAULT_WINDOW, clear).formula == "C6H4BrCl2"
    agreed = extract_graph(drawn, DEFAULT_WINDOW, clear, ElementCounts.known(m.formula))
    assert agreed.formula == m.formula and agreed.smiles == m.smiles
    # fainter than WEAK_H, chemistry leaves it out on its own: an H on a Br is no molecule
    alone = extract_graph(drawn, DEFAULT_WINDOW, np.maximum(faint, 0.45 * spot))
    assert alone.formula == m.formula and alone.smiles == m.smiles


def _torn(depiction: np.ndarray, atom: GraphAtom, element: str, colour: str, share: float) -> np.ndarray:
    """``depiction`` with the inner ``share`` of ``atom``'s pixels of ``element`` near its centre drawn in the
    colour of ``colour`` (a blurred prediction's undecided atom)."""
    from raypipe.chem.pixels import CENTRE_VOTE_RADIUS

    col, row = DEFAULT_WINDOW.to_pixels(np.array([[atom.x, atom.y]]))[0]
    rr, cc = np.mgrid[:128, :128] + 0.5
    distance = np.hypot(rr - row, cc - col)
    mine = (distance <= CENTRE_VOTE_RADIUS) & (depiction == COLORS[element]).all(axis=-1)
    ys, xs = np.nonzero(mine)
    inner = np.argsort(distance[mine])[: int(share * mine.sum())]
    torn = depiction.copy()
    torn[ys[inner], xs[inner]] = COLORS[colour]
    return torn


def test_chemistry_relabels_an_atom_its_colours_leave_in_doubt_rather_than_invent_a_hydrogen(monkeypatch) -> None:
    """A ring N drawn 60 % in carbon's colour reads as C by its votes; a C there would need an H that no
    one saw, so chemistry takes the N its colours also allow (``alternatives``, ``RELABEL_WEIGHT``) and the
    molecule reads right. Without relabelling the same reading is wrong; a clearly drawn atom has no
    alternative, and a count that chose the elements leaves none for chemistry."""
    import raypipe.chem.hydrogens as hydrogens
    from raypipe.training.data import centre_targets

    m = Molecule.from_smiles("Clc1ccncc1")
    depiction = render_depiction(m)
    centres = (centre_targets(depiction[None], DEFAULT_WINDOW)[0] + 1) / 2
    clear = extract_graph(depiction, DEFAULT_WINDOW, centres)
    assert score(clear, m).total and all(a.alternatives == () for a in clear.atoms if a.element != "N")
    nitrogen = next(a for a in clear.atoms if a.element == "N")
    torn = _torn(depiction, nitrogen, "N", "C", 0.6)
    read = extract_graph(torn, DEFAULT_WINDOW, centres)
    assert score(read, m).total and read.smiles == m.smiles and read.formula == "C5H4ClN"
    with monkeypatch.context() as patch:
        patch.setattr(hydrogens, "RELABEL_POOL", 0)
        patch.setattr(hydrogens, "NITROGEN_GUESS", None)  # which would read that C as N from chemistry alone
        alone = extract_graph(torn, DEFAULT_WINDOW, centres)
    assert not score(alone, m).total and "N" not in alone.formula
    doubtful = [a for a in alone.atoms if a.alternatives]  # the torn N: read as C, N its alternative
    assert [(a.element, a.alternatives[0][0]) for a in doubtful] == [("C", "N")]
    assert np.hypot(doubtful[0].x - nitrogen.x, doubtful[0].y - nitrogen.y) < 0.2
    counted = extract_graph(torn, DEFAULT_WINDOW, centres, {e: float(m.elements.count(e)) for e in ELEMENTS})
    assert score(counted, m).total and all(a.alternatives == () for a in counted.atoms)


def test_a_hydrogen_whose_stick_is_lost_is_bonded_to_its_nearest_atom_and_a_far_one_is_not(monkeypatch) -> None:
    """A prediction may draw an H but not its stick: the H takes the nearest heavy atom within
    ``ORPHAN_REACH`` of their ideal bond length (else the graph is two pieces, no molecule); a stray H drawn
    far from every atom stays unbonded."""
    from raypipe.chem.elements import ball_radius
    from raypipe.chem.molgraph import ideal_length
    from raypipe.chem.pixels import BOND_FACTOR, ORPHAN_REACH
    from raypipe.training.data import centre_targets

    m = Molecule.from_smiles("O=C(O)c1ccc(Br)cc1")
    depiction = render_depiction(m)
    centres = (centre_targets(depiction[None], DEFAULT_WINDOW)[0] + 1) / 2
    read = extract_graph(depiction, DEFAULT_WINDOW, centres)
    oxygen = next(i for i, a in enumerate(read.atoms) if a.element == "O" and
                  any(read.atoms[j if i == k else k].element == "H" for k, j in read.bonds if i in (k, j)))
    h = next(j if i == oxygen else i for i, j in read.bonds if oxygen in (i, j) and
             read.atoms[j if i == oxygen else i].element == "H")
    o_xy, h_xy = read.positions[oxygen], read.positions[h]
    # move the H out to 1.45 x the O-H ideal length: beyond the stick search's 1.25, within ORPHAN_REACH
    ideal = ideal_length(read.atoms, oxygen, h)
    away = o_xy + 1.45 * ideal * (h_xy - o_xy) / np.hypot(*(h_xy - o_xy))
    rr, cc = np.mgrid[:128, :128] + 0.5
    (hc, hr), (ac, ar) = DEFAULT_WINDOW.to_pixels(np.array([h_xy, away]))
    moved, peaks = depiction.copy(), centres.copy()
    old = np.hypot(rr - hr, cc - hc) <= ball_radius("H") / DEFAULT_WINDOW.pixel + 0.5
    moved[old & (moved == COLORS["H"]).all(axis=-1)] = 0
    moved[np.hypot(rr - ar, cc - ac) <= ball_radius("H") / DEFAULT_WINDOW.pixel] = COLORS["H"]
    peaks[np.hypot(rr - hr, cc - hc) <= 2.5] = 0
    peaks = np.maximum(peaks, np.exp(-((rr - ar) ** 2 + (cc - ac) ** 2) / 2))
    assert BOND_FACTOR < 1.45 < ORPHAN_REACH
    again = extract_graph(moved, DEFAULT_WINDOW, peaks)
    import raypipe.chem.pixels as pixels
    with monkeypatch.context() as patch:
        patch.setattr(pixels, "ORPHAN_REACH", 0.0)
        unbonded = extract_graph(moved, DEFAULT_WINDOW, peaks)
    assert unbonded.formula == m.formula and unbonded.smiles is None  # two pieces: no molecule
    assert again.formula == m.formula and again.smiles == m.smiles and score(again, m).total
    stray = h_xy + 2.5 * (h_xy - o_xy) / np.hypot(*(h_xy - o_xy))
    (sc, sr), = DEFAULT_WINDOW.to_pixels(np.array([stray]))
    far, far_peaks = depiction.copy(), np.maximum(centres, np.exp(-((rr - sr) ** 2 + (cc - sc) ** 2) / 2))
    far[np.hypot(rr - sr, cc - sc) <= ball_radius("H") / DEFAULT_WINDOW.pixel] = COLORS["H"]
    lonely = extract_graph(far, DEFAULT_WINDOW, far_peaks)
    assert lonely.formula == "C7H6BrO2" and lonely.smiles is None
    assert sum(len(a.alternatives) for a in lonely.atoms) == 0


def _misdrawn(graph: MolGraph, k: int, element: str, alternatives: tuple = ()) -> MolGraph:
    """``graph`` (a molecule's true graph) with atom ``k`` drawn as ``element``, its colours allowing
    ``alternatives`` ((element, nats), ...): what a model that misdraws one atom gives chemistry."""
    from dataclasses import replace

    atoms = list(graph.atoms)
    atoms[k] = replace(atoms[k], element=element, alternatives=alternatives)
    return MolGraph(atoms, list(graph.bonds), list(graph.bond_confidence))


def _reads_right_unless(monkeypatch, seen: MolGraph, m: Molecule, lever: str, off, truth: MolGraph | None = None):
    """Assert that chemistry reads ``seen`` as ``m`` (its SMILES, and scored against ``truth``, else ``m``); return
    the reading with :mod:`raypipe.chem.hydrogens`' ``lever`` set to ``off``, for the caller to show it wrong."""
    import raypipe.chem.hydrogens as hydrogens
    from raypipe.chem.hydrogens import with_hidden_hydrogens

    read = with_hidden_hydrogens(seen)
    assert read.smiles == m.smiles and score(read, truth or m).total
    with monkeypatch.context() as patch:
        patch.setattr(hydrogens, lever, off)
        return with_hidden_hydrogens(seen)


def _atom_with(graph: MolGraph, element: str, heavy: int = 2) -> int:
    """The first atom of ``element`` with ``heavy`` heavy neighbours."""
    return next(k for k, a in enumerate(graph.atoms) if a.element == element and sum(
        graph.atoms[j if i == k else i].element != "H" for i, j in graph.bonds if k in (i, j)) == heavy)


def test_chemistry_prefers_a_neutral_reading_to_one_that_separates_charges(monkeypatch) -> None:
    """A coumarin whose ring CH is drawn in oxygen's colour (carbon its alternative, at 1 nat) reads as a
    zwitterion if charges cost nothing; each pair of opposite charges costs ``SEPARATION_COST``, so chemistry
    relabels the atom and reads the neutral molecule. A nitro group, which no neutral reading replaces,
    keeps its charges."""
    from raypipe.chem.hydrogens import with_hidden_hydrogens

    m = Molecule.from_smiles("O=c1ccc2ccccc2o1")
    truth = MolGraph.from_molecule(m)
    ring_ch = 3  # C4: the CH beside the ring fusion (atoms in the SMILES' order)
    assert truth.atoms[ring_ch].element == "C" and [truth.atoms[j if i == ring_ch else i].element for i, j in
                                                    truth.bonds if ring_ch in (i, j)].count("H") == 1
    seen = _misdrawn(truth, ring_ch, "O", (("C", 1.0),))
    free = _reads_right_unless(monkeypatch, seen, m, "SEPARATION_COST", 0.0)
    assert "+" in free.smiles and "-" in free.smiles and free.formula == "C8H6O3"
    nitro = Molecule.from_smiles("O=[N+]([O-])c1ccccc1")
    assert with_hidden_hydrogens(MolGraph.from_molecule(nitro)).smiles == nitro.smiles


def test_an_h_drawn_on_a_ring_oxygen_is_left_out_even_where_it_is_not_faint(monkeypatch) -> None:
    """A model may draw an H where a ring O's lone pair bulges. The O's two ring bonds already fill its
    valence, so chemistry may leave that H out (``OVERFULL_ELEMENTS``), however bright it is, and the chromone
    reads right; without the lever the bright H (above ``WEAK_H``) stays and the reading is wrong. An OH's H,
    whose O has one heavy neighbour, is no such H."""
    from raypipe.chem.hydrogens import WEAK_H, _overfull_hydrogens

    m = Molecule.from_smiles("O=c1ccoc2ccccc12")
    truth = MolGraph.from_molecule(m)
    ring_o = _atom_with(truth, "O")
    o = truth.atoms[ring_o]
    bright = GraphAtom("H", o.x + 0.9, o.y + 0.3, WEAK_H + 0.1)
    seen = MolGraph(truth.atoms + [bright], truth.bonds + [(ring_o, len(truth.atoms))],
                    truth.bond_confidence + [WEAK_H + 0.1])
    assert _overfull_hydrogens(seen) == [len(truth.atoms)]
    kept = _reads_right_unless(monkeypatch, seen, m, "OVERFULL_ELEMENTS", ())
    assert not score(kept, m).total and kept.formula != m.formula
    phenol = MolGraph.from_molecule(Molecule.from_smiles("Oc1ccccc1"))
    assert _overfull_hydrogens(phenol) == []


def test_a_charged_atom_may_be_read_as_the_neutral_element_it_was_misread_from(monkeypatch) -> None:
    """A nitrile's N drawn wholly in oxygen's colour (no alternative) reads as an oxonium cation, C#[O+],
    unless chemistry may read a charged atom as the neutral element with its electrons (``ISOELECTRONIC``:
    O+ -> N), at ``ISOELECTRONIC_COST``: then benzonitrile reads right."""

    m = Molecule.from_smiles("N#Cc1ccccc1")
    truth = MolGraph.from_molecule(m)
    seen = _misdrawn(truth, _atom_with(truth, "N", heavy=1), "O")
    cation = _reads_right_unless(monkeypatch, seen, m, "ISOELECTRONIC_COST", None)  # the nitrile's C, in no ring, is not read as N either (nitrosobenzene)
    assert cation.smiles == "[O+]#Cc1ccccc1" and not score(cation, m).total


def test_a_thiophene_amide_reads_neutral_not_as_a_sulfonium_zwitterion(monkeypatch) -> None:
    """RDKit's bond-order perception tries sulfur's valences 6 and 3 before 2 and keeps the first that
    works: thiophene-2,4-dicarboxamide, read from its true graph, comes out as a sulfonium enolate. An S
    whose neighbours leave it oxygen's valence is perceived as O too (``PERCEIVE_LIGHTER``), and the reading
    with fewer charges is the molecule's own SMILES."""
    from raypipe.chem.hydrogens import with_hidden_hydrogens

    m = Molecule.from_smiles("NC(=O)c1csc(C(=O)N)c1")
    seen = MolGraph.from_molecule(m)
    charged = _reads_right_unless(monkeypatch, seen, m, "PERCEIVE_LIGHTER", {})
    assert "[S+]" in charged.smiles and "[O-]" in charged.smiles and charged.smiles != m.smiles
    for smiles in ("CS(C)(=O)=O", "c1ccc(P(c2ccccc2)c2ccccc2)cc1", "COP(=O)(OC)OC"):  # S(VI) and P(V) stay
        other = Molecule.from_smiles(smiles)
        assert with_hidden_hydrogens(MolGraph.from_molecule(other)).smiles == other.smiles


def test_a_ring_allene_costs_more_than_relabelling_the_atom_it_comes_from(monkeypatch) -> None:
    """A furan's O drawn in carbon's colour (oxygen its alternative, at 1.5 nats) reads as a
    cyclopentadiene with an allene in the ring if cumulated double bonds cost nothing; each atom with two
    double bonds costs ``CUMULENE_COST`` (none of the catalogue's molecules has one), so chemistry relabels
    the atom and 3-(2-furyl)acrolein reads right."""

    m = Molecule.from_smiles("O=CC=Cc1ccco1")
    truth = MolGraph.from_molecule(m)
    seen = _misdrawn(truth, _atom_with(truth, "O"), "C", (("O", 1.5),))
    allene = _reads_right_unless(monkeypatch, seen, m, "CUMULENE_COST", 0.0)
    assert allene.smiles == "O=CC=CC1=C=CC=C1" and not score(allene, m).total


def test_smiles_right_asks_for_the_molecule_itself_not_only_its_atoms_and_bonds() -> None:
    """``total`` compares atoms, elements and bonds; ``smiles_right`` also the bond orders and charges a
    user queries: the zwitterion of the same graph counts for the one and not for the other."""
    from raypipe.chem.hydrogens import with_hidden_hydrogens
    from raypipe.training.validation import score_rows

    rows, graphs = [], []
    for smiles in ("NC(=O)c1csc(C(=O)N)c1", "O=CC=Cc1ccco1"):
        m = Molecule.from_smiles(smiles)
        atoms = [{"element": e, "x": x, "y": y, "z": z} for e, (x, y, z) in zip(m.elements, m.positions.tolist())]
        rows.append({"smiles": smiles, "corrugation": m.corrugation, "atoms": atoms,
                     "bonds": [{"i": i, "j": j} for i, j, _ in m.bonds]})
        graphs.append(with_hidden_hydrogens(MolGraph.from_molecule(m)))
    assert score_rows(graphs, rows)["smiles_right"] == 1.0
    graphs[0].smiles = "NC(=O)C1=CC(=C(N)[O-])[S+]=C1"  # the same atoms and bonds, charges separated
    scores = score_rows(graphs, rows)
    assert scores["total"] == 1.0 and scores["smiles_right"] == 0.5


@pytest.mark.parametrize("smiles, without", [("O=C1C=CC(=O)N1c1ccccc1", "O=C1C=CC(=O)C1=C1C=CC=CC1"),
                                             ("c1ccc(-c2ccccn2)cc1", "c1ccc(-c2ccccc2)cc1")])
def test_an_n_drawn_wholly_in_carbon_colour_is_read_as_n_where_a_carbon_needs_an_unseen_h(
        monkeypatch, smiles: str, without: str) -> None:
    """An imide's or a pyridine's N drawn in carbon's colour, with no other element among its colours: read
    as C it needs an H nobody saw (under a flat ring, where the geometry counts against one), and every
    reading costs more than ``NITROGEN_GUESS``; a carbon drawn without H may then be read as N at that
    cost, and the molecule reads right. Without the lever it reads as the carbon compound."""

    m = Molecule.from_smiles(smiles)
    truth = MolGraph.from_molecule(m)
    seen = _misdrawn(truth, next(k for k, a in enumerate(truth.atoms) if a.element == "N"), "C")
    carbon = _reads_right_unless(monkeypatch, seen, m, "NITROGEN_GUESS", None)
    assert carbon.smiles == without and not score(carbon, m).total


@pytest.mark.parametrize("smiles", ["N#Cc1ccccn1", "N#Cc1ccncc1"])
def test_two_misdrawn_atoms_are_read_by_the_isoelectronic_and_the_nitrogen_levers_together(smiles: str) -> None:
    """A cyanopyridine whose nitrile N is drawn as O and whose ring N is drawn as C: the cheapest reading is
    an oxonium with a carbon that needs an H nobody saw; reading the O+ as N (``ISOELECTRONIC``) and the
    bare carbon as N (``NITROGEN_GUESS``) both apply, the nitrogen guess to the graph that the isoelectronic
    pass relabelled (and to the seen graph), so the molecule reads right, not as ``[O+]#C...`` with its
    ring N found."""
    from raypipe.chem.hydrogens import with_hidden_hydrogens

    m = Molecule.from_smiles(smiles)
    truth = MolGraph.from_molecule(m)
    nitrile = _atom_with(truth, "N", heavy=1)
    ring = next(k for k, a in enumerate(truth.atoms) if a.element == "N" and k != nitrile)
    seen = _misdrawn(_misdrawn(truth, nitrile, "O"), ring, "C")
    read = with_hidden_hydrogens(seen)
    assert read.smiles == m.smiles and score(read, m).total


def test_an_atom_drawn_on_a_ring_oxygen_is_left_out_with_the_h_drawn_there_too(monkeypatch) -> None:
    """A model may draw an O (or an F) on an oxadiazole's or an anhydride's ring O, whose two ring bonds
    already fill its valence: chemistry reads an oxonium oxide, ``[o+][O-]``, unless it may leave that
    one-bond atom out (``OVERFULL_TERMINALS``, at ``WEAK_H_DROP`` x its confidence), and with it an H drawn on
    the same O (two left out at once). An N-oxide's and a nitro group's O, on an N with room, stay."""
    from raypipe.chem.hydrogens import _overfull_terminals, with_hidden_hydrogens

    m = Molecule.from_smiles("c1ccc(-c2noc(-c3ccccc3)n2)cc1")
    truth = MolGraph.from_molecule(m)
    ring_o = _atom_with(truth, "O")
    o, n = len(truth.atoms), len(truth.atoms) + 1
    x, y = truth.atoms[ring_o].x, truth.atoms[ring_o].y
    centre = np.mean(truth.positions, axis=0)
    out = np.array([x, y]) - centre
    out /= np.hypot(*out)
    extra = [GraphAtom("O", x + 1.3 * out[0], y + 1.3 * out[1], 0.4),
             GraphAtom("H", x + 0.9 * out[1], y - 0.9 * out[0], 0.45)]
    seen = MolGraph(truth.atoms + extra, truth.bonds + [(ring_o, o), (ring_o, n)], truth.bond_confidence + [0.4, 0.45])
    assert _overfull_terminals(seen) == [o]
    oxide = _reads_right_unless(monkeypatch, seen, m, "OVERFULL_TERMINALS", False)
    assert "[o+]" in oxide.smiles and "[O-]" in oxide.smiles and not score(oxide, m).total
    for smiles in ("[O-][n+]1ccccc1", "O=[N+]([O-])c1ccccc1"):
        other = MolGraph.from_molecule(Molecule.from_smiles(smiles))
        assert _overfull_terminals(other) == [] and with_hidden_hydrogens(other).smiles == smiles


@pytest.mark.parametrize("smiles, merged", [("C#Cc1ccc(F)cc1", "C"), ("O=C(Nc1cccc(C#Cc2ccccc2)c1)c1ccco1", "N")])
def test_an_alkyne_drawn_short_is_rebuilt(monkeypatch, smiles: str, merged: str) -> None:
    """The two carbons of a C#C, 1.2 Å apart, often merge into one ball: a terminal alkyne's CH then sits
    ~2.4 Å from its ring with nothing between, a diarylacetylene's two carbons become one atom (of any colour)
    midway between the rings. No bond reaches across those gaps, and no reading is valid; chemistry may rebuild
    the chain (``SP_CHAIN_COST``: a C put 1.42 Å from the ring, or the middle atom split in two on the line),
    and the molecule reads right."""
    from dataclasses import replace

    import raypipe.chem.hydrogens as hydrogens

    m = Molecule.from_smiles(smiles)
    truth = MolGraph.from_molecule(m)
    heavy = lambda k: [j if i == k else i for i, j in truth.bonds if k in (i, j) and  # noqa: E731
                       truth.atoms[j if i == k else i].element != "H"]
    sp = [k for i, j, order in m.bonds if order == 3 for k in (i, j)]  # the C#C's two carbons
    assert len(sp) == 2 and all(truth.atoms[k].element == "C" for k in sp)
    xy = truth.positions
    if merged == "C":  # the terminal CH: kept, moved to where the merged ball sits; its partner gone
        inner = next(k for k in sp if len(heavy(k)) == 2)
        outer = next(k for k in sp if k != inner)
        ring = next(j for j in heavy(inner) if j != outer)
        spot = xy[ring] + (xy[outer] - xy[ring]) * 2.4 / np.hypot(*(xy[outer] - xy[ring]))
        moved = [replace(a, x=float(spot[0]), y=float(spot[1])) if k == outer else a
                 for k, a in enumerate(truth.atoms)]
        seen = MolGraph(moved, [(i, j) for i, j in truth.bonds if inner not in (i, j)])
        seen = hydrogens._without(seen, {inner})
    else:  # both carbons drawn as one atom midway, of another colour
        middle = xy[sp].mean(axis=0)
        atoms = truth.atoms + [GraphAtom(merged, float(middle[0]), float(middle[1]), 0.6)]
        seen = hydrogens._without(MolGraph(atoms, list(truth.bonds)), set(sp))
    short = _reads_right_unless(monkeypatch, seen, m, "SP_CHAIN_COST", None)
    assert not score(short, m).total


def test_the_h_of_an_intramolecular_h_bond_drawn_on_the_wrong_end_is_moved_back(monkeypatch) -> None:
    """A salicylic acid's phenol H points at the carboxyl across an H-bond; a model may draw it on the acid's OH.
    Read as drawn, that O has two H and the phenol O none: a zwitterion, ``C([OH2+])...[O-]``. Chemistry may move
    an H that overfills its O to the nearest O with room (``REHOME_COST``), and the acid reads right."""
    from dataclasses import replace

    m = Molecule.from_smiles("O=C(O)c1ccccc1O")  # atoms in the SMILES' order: 0 O=, 2 OH, 9 the phenol O
    graph = MolGraph.from_molecule(m)
    xy = graph.positions
    h = next(j if i == 9 else i for i, j in graph.bonds if 9 in (i, j) and graph.atoms[j if i == 9 else i].element == "H")
    acceptor = 2  # the acid's OH, facing the phenol O: with the phenol H drawn on it, it has two
    line = (xy[acceptor] - xy[9]) / np.hypot(*(xy[acceptor] - xy[9]))

    def h_at(point):
        return [replace(a, x=float(point[0]), y=float(point[1])) if k == h else a for k, a in enumerate(graph.atoms)]

    truth = MolGraph(h_at(xy[9] + 0.97 * line), list(graph.bonds))  # the H-bonded conformer: H on the O-O line
    seen = MolGraph(h_at(xy[acceptor] - 0.96 * line), [(acceptor, h) if h in b else b for b in graph.bonds])
    drawn = _reads_right_unless(monkeypatch, seen, m, "REHOME_COST", None, truth)
    assert drawn.smiles != m.smiles and not score(drawn, truth).total


def test_the_nitrogen_guess_reads_a_ring_carbon_not_a_nitrile_carbon_as_n(monkeypatch) -> None:
    """A 2-naphthonitrile whose nitrile N is drawn as O. Where its readings are dear, the nitrogen guess could
    read the nitrile's C as N, a nitroso compound (O=N-Ar: a model's drawing of this molecule did, with other
    doubts adding to the cost of reading the O+ as N). Only a carbon on a ring of the graph is a candidate
    (``NITROGEN_IN_RING``): the pyridine's or imide's N the lever is for, not a chain's; the nitrile reads
    right, its O+ read as N (``ISOELECTRONIC``)."""
    import raypipe.chem.hydrogens as hydrogens
    from raypipe.chem.hydrogens import _bare_carbons, with_hidden_hydrogens

    m = Molecule.from_smiles("N#Cc1ccc2ccccc2c1")
    truth = MolGraph.from_molecule(m)
    nitrile_n = _atom_with(truth, "N", heavy=1)
    nitrile_c = next(j if i == nitrile_n else i for i, j in truth.bonds if nitrile_n in (i, j))
    seen = _misdrawn(truth, nitrile_n, "O")
    assert nitrile_c not in _bare_carbons(seen)
    read = with_hidden_hydrogens(seen)
    assert read.smiles == m.smiles and score(read, m).total
    with monkeypatch.context() as patch:
        patch.setattr(hydrogens, "NITROGEN_IN_RING", False)
        assert nitrile_c in _bare_carbons(seen)


def test_an_oh_drawn_in_fluorine_colour_with_its_h_is_read_as_the_oh(monkeypatch) -> None:
    """A hydroxypyrimidine's OH drawn as F with its H: a fluorine with two bonds is no molecule, and the atom's
    colours give no other element. An F drawn with an H and one heavy neighbour may be read as O
    (``HYDROXY_HALOGEN``), and the molecule reads right; without the lever no reading is valid."""
    from raypipe.chem.hydrogens import _hydroxy_halogens

    m = Molecule.from_smiles("Oc1ncnc2c1cnn2-c1ccc(Cl)cc1")
    truth = MolGraph.from_molecule(m)
    oh = _atom_with(truth, "O", heavy=1)
    seen = _misdrawn(truth, oh, "F")
    assert _hydroxy_halogens(seen) == [oh]
    drawn = _reads_right_unless(monkeypatch, seen, m, "HYDROXY_HALOGEN", None)
    assert drawn.smiles is None and not score(drawn, m).total
    assert _hydroxy_halogens(MolGraph.from_molecule(Molecule.from_smiles("Fc1ccccc1"))) == []
    bromo = MolGraph.from_molecule(Molecule.from_smiles("Oc1ccc(Br)cc1"))  # an OH drawn as Br: not this lever's
    assert _hydroxy_halogens(_misdrawn(bromo, _atom_with(bromo, "O", heavy=1), "Br")) == []
