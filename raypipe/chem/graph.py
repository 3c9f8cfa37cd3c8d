"""Molecular graphs read back from ball-and-stick depictions.

:func:`extract_graph` decodes true and predicted depictions alike:

1. every pixel is assigned the nearest palette colour (black background or an element colour);
2. balls: for each element, the fraction of a ball-sized disc around each pixel that holds the
   element's colour is computed (hidden parts, i.e. other foreground, count half); local maxima above
   0.6 are atoms (sticks are too thin to reach it), one atom per place, except that a heavy atom may
   sit half under an H. An atom's confidence is how full its ball is;
3. bonds: atom pairs closer (in projection) than 1.25 x the sum of their covalent radii whose joining
   line runs over the foreground for at least 80% of its length, with no heavy atom on its middle;
   confidence is that fraction. One bond per H, and no false triangles;
4. hidden hydrogens: a top view hides the H below another H of a CH2/CH3/NH2 group, or below its
   atom. Where they are is guessed from the geometry, and the guess is checked by chemistry: the
   cheapest variant that RDKit's bond-order perception reads as one closed-shell molecule wins;
5. the formula counts the atoms; the SMILES is that molecule's, or None when no variant is valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdDetermineBonds
from rdkit.Geometry import Point3D
from scipy import ndimage

from raypipe.chem.elements import COVALENT_RADII, ELEMENTS, ball_radius, palette
from raypipe.chem.molecule import Molecule, hill_formula
from raypipe.window import DEFAULT_WINDOW, Window

BOND_FACTOR = 1.25
MIN_BALL_FILL = 0.6
MIN_OWN_FILL = 0.3
OCCLUDED_WEIGHT = 0.5
MIN_UNDER_H_FILL = 0.66  # a heavy atom half under an H: its ball at least this full
VALENCE = {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1, "S": 2, "P": 3, "Cl": 1, "Br": 1, "I": 1}
# Evidence for a hidden hydrogen (see _hidden_hydrogen_options), in units of
TWIN_LENGTH, TWIN_SCALE = 0.86, 0.05  # 0.05 of a visible X-H's projected/ideal length below 0.86,
RESIDUAL_SCALE = 0.1  # 0.1 of the bond-direction sum (unit bonds) a hidden H would cancel,
UNDER_RESIDUAL, UNDER_SCALE = 0.45, 0.05  # for a carbon without visible H: 0.05 of its sum above 0.45;
NITROGEN_TRUST, NITROGEN_UNDER_EVIDENCE = 0.25, -4.0  # scaled for N; an N without visible H: -4
ION_COST = 3.0  # the evidence a cation reading costs against a neutral one
FLIP_POOL = 6  # the least certain options that chemistry may overrule
CHARGEABLE = {"N", "O", "S", "P"}
MIN_LINE_FILL = 0.8


@dataclass(frozen=True)
class GraphAtom:
    element: str
    x: float  # Å, window coordinates
    y: float
    confidence: float = 1.0


@dataclass
class MolGraph:
    """Atoms with 2D positions (Å) and bonds (i, j), as seen from the tip."""

    atoms: list[GraphAtom]
    bonds: list[tuple[int, int]]
    bond_confidence: list[float] = field(default_factory=list)
    smiles: str | None = None
    bond_orders: list[float] = field(default_factory=list)  # 1, 1.5 (aromatic), 2, 3 where perceived; else empty

    @property
    def formula(self) -> str:
        return hill_formula([a.element for a in self.atoms])

    @property
    def positions(self) -> np.ndarray:
        """(N, 2) atom positions in Å."""
        return np.array([(a.x, a.y) for a in self.atoms], dtype=np.float64).reshape(-1, 2)

    @property
    def confidence(self) -> float:
        """Overall confidence: the weakest atom or bond (0 for an empty graph)."""
        values = [a.confidence for a in self.atoms] + list(self.bond_confidence)
        return float(min(values)) if self.atoms else 0.0

    @classmethod
    def from_molecule(cls, molecule: Molecule) -> "MolGraph":
        """The true graph of a molecule (its top view), for scoring."""
        atoms = [GraphAtom(e, float(x), float(y)) for e, (x, y, _z) in zip(molecule.elements, molecule.positions)]
        bonds = [(i, j) for i, j, _o in molecule.bonds]
        return cls(atoms, bonds, [1.0] * len(bonds), molecule.smiles)

    @classmethod
    def from_rows(cls, atoms: list[dict], bonds: list[dict]) -> "MolGraph":
        """The inverse of :meth:`to_rows` (also reads simulation shards' atoms and bonds)."""
        graph_atoms = [GraphAtom(a["element"], float(a["x"]), float(a["y"]), float(a.get("confidence", 1.0)))
                       for a in atoms]
        return cls(graph_atoms, [(int(b["i"]), int(b["j"])) for b in bonds],
                   [float(b.get("confidence", 1.0)) for b in bonds])

    def to_rows(self) -> tuple[list[dict], list[dict]]:
        """Atoms and bonds as plain dicts (for Parquet/JSON)."""
        atoms = [{"element": a.element, "x": a.x, "y": a.y, "confidence": a.confidence} for a in self.atoms]
        orders = self.bond_orders if len(self.bond_orders) == len(self.bonds) else [None] * len(self.bonds)
        bonds = [{"i": i, "j": j, "order": o, "confidence": c}
                 for (i, j), c, o in zip(self.bonds, self.bond_confidence, orders)]
        return atoms, bonds


def classify_pixels(depiction: np.ndarray) -> np.ndarray:
    """(H, W) int labels: 0 background, k the k-th element of ``ELEMENTS`` + 1 (nearest colour)."""
    pixels = depiction.reshape(-1, 3)
    labels = np.zeros(len(pixels), dtype=np.intp)
    lit = np.flatnonzero(pixels.any(axis=1))  # exact black is background: skip it
    colours = palette()
    values = pixels[lit].astype(np.float32)
    d2 = (values**2).sum(1)[:, None] - 2 * values @ colours.T + (colours**2).sum(1)[None, :]
    labels[lit] = d2.argmin(axis=1)
    return labels.reshape(depiction.shape[:2])


def extract_graph(depiction: np.ndarray, window: Window | None = None) -> MolGraph:
    """Decode an (S, S, 3) uint8 depiction into a :class:`MolGraph` (positions in Å on ``window``)."""
    window = window or DEFAULT_WINDOW
    if depiction.ndim != 3 or depiction.shape[2] < 3 or depiction.shape[:2] != (window.size, window.size):
        raise ValueError(f"depiction of shape {depiction.shape} does not fit a {window.size}-pixel window")
    labels = classify_pixels(depiction[..., :3])
    atoms = _find_atoms(labels, window)
    # sticks are thinner than a pixel and a half: follow them on the foreground grown by one pixel
    bonds, bond_conf = _find_bonds(atoms, ndimage.binary_dilation(labels > 0, np.ones((3, 3), bool)), window)
    return _with_hidden_hydrogens(_clean_bonds(MolGraph(atoms, bonds, bond_conf)))


def _find_atoms(labels: np.ndarray, window: Window) -> list[GraphAtom]:
    candidates = []  # (fill, element, col, row, (col, row) of the centroid of its own colour)
    foreground = (labels > 0).astype(np.float32)
    for k, element in enumerate(ELEMENTS, start=1):
        mask = labels == k
        if mask.sum() < 3:
            continue
        radius = ball_radius(element) / window.pixel
        box = 2 * int(round(radius)) + 1
        fill, covered, (top, left) = _disc_fractions(mask, foreground, radius)
        # a ball partly hidden by higher atoms still sits on foreground: count hidden parts half
        fill = np.where(fill >= MIN_OWN_FILL, fill + OCCLUDED_WEIGHT * np.maximum(covered - fill, 0), 0)
        # local maxima over +-2 pixels: a wider window lets a neighbour's plateau swallow a weaker ball
        peaks = (fill == ndimage.maximum_filter(fill, size=5, mode="constant")) & (fill >= MIN_BALL_FILL)
        blobs, n = ndimage.label(peaks)
        if n == 0:
            continue
        rows, cols = np.nonzero(peaks)
        ids = blobs[rows, cols]
        count = np.bincount(ids)[1:]
        centres = zip(np.bincount(ids, rows)[1:] / count, np.bincount(ids, cols)[1:] / count)
        for r, c in centres:
            peak = fill[int(round(r)), int(round(c))]
            r0, c0 = int(round(r)) + top, int(round(c)) + left
            # start from the centroid of the ball's own colour, then mean-shift on the foreground
            sl = (slice(max(r0 - box // 2, 0), r0 + box // 2 + 1), slice(max(c0 - box // 2, 0), c0 + box // 2 + 1))
            rr, cc = np.nonzero(mask[sl])
            if len(rr):
                r, c = rr.mean() + sl[0].start, cc.mean() + sl[1].start
            r, c = r + 0.5, c + 0.5  # pixel centres
            own = (c, r)
            r, c = _centre(foreground, r, c, radius)
            candidates.append((float(min(peak, 1.0)), element, c, r, own))
    # one atom per place: a weaker candidate closer than 0.6 ball radii to a kept one is dropped, unless
    # it is a heavy atom whose visible crescent lies off the centre of a hydrogen sitting on top of it
    candidates.sort(key=lambda t: -t[0])
    kept: list[tuple] = []
    for cand in candidates:
        limit = 0.6 * ball_radius(cand[1]) / window.pixel
        if all(np.hypot(cand[2] - k[2], cand[3] - k[3]) >= limit or _under_hydrogen(cand, k, window) for k in kept):
            kept.append(cand)
    if not kept:
        return []
    xy = window.to_angstrom(np.array([(k[2], k[3]) for k in kept]))
    order = np.lexsort((xy[:, 0], -xy[:, 1]))  # reading order: top to bottom, left to right
    return [GraphAtom(kept[i][1], float(xy[i, 0]), float(xy[i, 1]), kept[i][0]) for i in order]


def _disc_fractions(mask: np.ndarray, foreground: np.ndarray,
                    radius: float) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Fractions of a ball-sized disc around each pixel that are ``mask`` and foreground.

    Only the fractions of the disc's part inside the image count, so balls cut by the edge still
    score in full. Computed on the box around ``mask`` (outside it the mask fraction is 0), returned
    with the box's top-left pixel.
    """
    disc = _disc(radius)
    half = disc.shape[0] // 2
    rows, cols = np.nonzero(mask)
    top, left = max(rows.min() - half - 2, 0), max(cols.min() - half - 2, 0)
    box = (slice(top, rows.max() + half + 3), slice(left, cols.max() + half + 3))
    # foreground a disc beyond the box still reaches discs centred on its edge
    wide = (slice(max(top - half, 0), box[0].stop + half), slice(max(left - half, 0), box[1].stop + half))
    inner = (slice(top - wide[0].start, box[0].stop - wide[0].start),
             slice(left - wide[1].start, box[1].stop - wide[1].start))
    inside = _inside(mask.shape, radius)[box]
    fill = ndimage.correlate(mask[box].astype(np.float32), disc, mode="constant") / inside
    covered = ndimage.correlate(foreground[wide], disc, mode="constant")[inner] / inside
    return fill, covered, (top, left)


@lru_cache(maxsize=32)
def _inside(shape: tuple[int, int], radius: float) -> np.ndarray:
    """The fraction of a disc around each pixel that lies inside an image of ``shape``."""
    return ndimage.correlate(np.ones(shape, np.float32), _disc(radius), mode="constant")


def _under_hydrogen(cand: tuple, kept: tuple, window: Window) -> bool:
    """True when candidate ``cand`` is a heavy atom partly hidden below the H ``kept``: its ball is at
    least ``MIN_UNDER_H_FILL`` full and its own colour forms a crescent whose centroid lies over half an
    H radius away from the H's centre (the grey rim of a blurred H is thinner, and centred on it)."""
    if kept[1] != "H" or cand[1] == "H" or cand[0] < MIN_UNDER_H_FILL:
        return False
    return bool(np.hypot(cand[4][0] - kept[2], cand[4][1] - kept[3]) > 0.5 * ball_radius("H") / window.pixel)


def _disc(radius: float) -> np.ndarray:
    """A ball's footprint: pixels whose centres lie within ``radius`` of the middle one, summing to 1."""
    half = int(np.ceil(radius))
    rr, cc = np.mgrid[-half:half + 1, -half:half + 1]
    disc = (rr**2 + cc**2 <= radius**2).astype(np.float32)
    return disc / disc.sum()


def _centre(foreground: np.ndarray, row: float, col: float, radius: float, steps: int = 2) -> tuple[float, float]:
    """Ball centre (row, col) by mean shift over the foreground within ``radius``, moved at most
    0.4 radius from the start.

    A ball partly covered by a higher atom still fills its disc with foreground, so the centroid of
    all foreground (not only the ball's own colour) stays nearer the ball's true centre than the
    centroid of its visible colour.
    """
    size = foreground.shape[0]
    start = np.array([row, col])
    for _ in range(steps):
        r0, r1 = max(int(row - radius), 0), min(int(row + radius) + 1, size)
        c0, c1 = max(int(col - radius), 0), min(int(col + radius) + 1, size)
        dr, dc = np.arange(r0, r1) + 0.5 - row, np.arange(c0, c1) + 0.5 - col
        inside = (dr[:, None] ** 2 + dc[None, :] ** 2 <= radius**2) & (foreground[r0:r1, c0:c1] > 0)
        n = inside.sum()
        if not n:
            break
        row, col = row + float(inside.sum(1) @ dr) / n, col + float(inside.sum(0) @ dc) / n
    shift = np.array([row, col]) - start
    norm = float(np.hypot(*shift))
    if norm > 0.4 * radius:
        row, col = start + shift * (0.4 * radius / norm)
    return float(row), float(col)


def _find_bonds(atoms: list[GraphAtom], foreground: np.ndarray, window: Window) -> tuple[list, list]:
    if len(atoms) < 2:
        return [], []
    xy = np.array([(a.x, a.y) for a in atoms])
    cov = np.array([COVALENT_RADII[a.element] for a in atoms])
    dist = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    limit = BOND_FACTOR * (cov[:, None] + cov[None, :])
    hydrogen = cov == COVALENT_RADII["H"]
    limit[hydrogen[:, None] & hydrogen[None, :]] = 0  # no H-H bonds
    pix = window.to_pixels(xy)
    bonds, confidence = [], []
    for i, j in zip(*np.nonzero(np.triu(dist <= limit, k=1))):
        steps = max(int(np.hypot(*(pix[j] - pix[i])) * 2), 2)
        t = np.linspace(0.0, 1.0, steps)
        pts = pix[i][None, :] + t[:, None] * (pix[j] - pix[i])[None, :]
        cols = np.clip(pts[:, 0].astype(int), 0, foreground.shape[1] - 1)
        rows = np.clip(pts[:, 1].astype(int), 0, foreground.shape[0] - 1)
        fill = float(foreground[rows, cols].mean())
        if fill >= MIN_LINE_FILL and not _atom_between(xy, i, j, atoms):
            bonds.append((int(i), int(j)))
            confidence.append(fill)
    return bonds, confidence


def _atom_between(xy: np.ndarray, i: int, j: int, atoms: list[GraphAtom]) -> bool:
    """True when a third, heavy atom sits on the middle half of segment i-j (so i and j are not bonded).

    Hydrogens never block: one bonds to a single atom, so an H projected over a bond is not a link.
    """
    axis = xy[j] - xy[i]
    t = (xy - xy[i]) @ axis / float(axis @ axis)
    off = np.abs((xy[:, 0] - xy[i, 0]) * axis[1] - (xy[:, 1] - xy[i, 1]) * axis[0]) / np.hypot(*axis)
    radii = np.array([ball_radius(a.element) for a in atoms])
    between = (t > 0.25) & (t < 0.75) & (off < 0.5 * radii)
    between[[i, j]] = False
    between &= np.array([a.element != "H" for a in atoms])
    return bool(between.any())


def _false_triangle_edges(xy: np.ndarray, bonds: list[tuple[int, int]]) -> set[int]:
    """Indices of bonds i-j closing a triangle i-k-j whose angle at k is over 75 degrees.

    Two atoms on one neighbour (the O of a carboxyl or nitro group turned out of the plane) can project
    within bonding distance; a real three-membered ring has 60-degree angles.
    """
    neighbours: dict[int, set[int]] = {}
    for i, j in bonds:
        neighbours.setdefault(i, set()).add(j)
        neighbours.setdefault(j, set()).add(i)
    false = set()
    for b, (i, j) in enumerate(bonds):
        for k in neighbours.get(i, set()) & neighbours.get(j, set()):
            u, v = xy[i] - xy[k], xy[j] - xy[k]
            cos = float(u @ v) / (np.hypot(*u) * np.hypot(*v) + 1e-9)
            if cos < np.cos(np.radians(75)):
                false.add(b)
    return false


def _clean_bonds(graph: MolGraph) -> MolGraph:
    """Keep one bond per H (the shortest relative to its ideal length), then drop false triangle edges.

    In that order: an H seen bonded to both ends of a real bond must not make it a false triangle.
    """
    atoms, bonds, conf = graph.atoms, graph.bonds, graph.bond_confidence
    xy = graph.positions
    stretch = [np.hypot(*(xy[i] - xy[j])) / _ideal(atoms, i, j) for i, j in bonds]
    keep = set(range(len(bonds)))
    for h, atom in enumerate(atoms):
        if atom.element == "H":
            mine = sorted((stretch[b], b) for b in keep if h in bonds[b])
            keep -= {b for _, b in mine[1:]}
    kept = sorted(keep)
    false = _false_triangle_edges(xy, [bonds[b] for b in kept])
    kept = [b for n, b in enumerate(kept) if n not in false]
    return MolGraph(list(atoms), [bonds[b] for b in kept], [conf[b] for b in kept])


def _ideal(atoms: list[GraphAtom], i: int, j: int) -> float:
    """Ideal bond length (Å): the sum of covalent radii."""
    return COVALENT_RADII[atoms[i].element] + COVALENT_RADII[atoms[j].element]


@dataclass(frozen=True)
class _HiddenHydrogen:
    """A hydrogen the top view may hide: bonded to ``atom``, below its visible H ``under`` (else below
    the atom itself); ``evidence`` > 0 means the geometry says it is there."""

    atom: int
    under: int | None
    evidence: float


def _hidden_hydrogen_options(graph: MolGraph) -> list[_HiddenHydrogen]:
    """One option per C or N with fewer bonds than its valence.

    Two hydrogens of a CH2, CH3 or pyramidal NH2 group that sit mirror-symmetric about the molecule's
    plane project onto one spot, at about 0.6 of the bond length from their atom, while an sp2 X-H lies
    in the plane and projects at full length. A twin below the visible H would also bring the sum of
    the atom's bond directions (unit length in 3D, near zero for a complete atom) closer to zero.
    Both hints add up to the evidence for a twin. A carbon without a visible H may hide one straight
    below it: the sum of its bond directions is then far from zero. Nitrogen, pyramidal with a lone
    pair, gives weaker hints (scaled by ``NITROGEN_TRUST``), which chemistry overrules more easily.
    An H forced by chemistry where the geometry saw no twin goes below the atom itself.
    """
    xy = graph.positions
    options = []
    for x, atom in enumerate(graph.atoms):
        neighbours = [j if i == x else i for i, j in graph.bonds if x in (i, j)]
        if atom.element not in ("C", "N") or len(neighbours) >= VALENCE[atom.element]:
            continue
        units = {k: (xy[k] - xy[x]) / _ideal(graph.atoms, x, k) for k in neighbours}
        total = sum(units.values(), np.zeros(2))
        residual = float(np.hypot(*total))
        hydrogens = [k for k in neighbours if graph.atoms[k].element == "H"]
        if hydrogens:
            h = min(hydrogens, key=lambda k: np.hypot(*units[k]))
            twin_residual = np.hypot(*(total + units[h]))
            evidence = ((TWIN_LENGTH - np.hypot(*units[h])) / TWIN_SCALE
                        + (residual - twin_residual) / RESIDUAL_SCALE)
            if atom.element == "N":
                evidence *= NITROGEN_TRUST
        elif atom.element == "C" and neighbours:
            h, evidence = None, (residual - UNDER_RESIDUAL) / UNDER_SCALE
        else:
            h, evidence = None, NITROGEN_UNDER_EVIDENCE
        options.append(_HiddenHydrogen(x, h if evidence > 0 else None, float(evidence)))
    return options


def _with_hidden_hydrogens(seen: MolGraph) -> MolGraph:
    """The seen graph plus the hydrogens a top view hides, chosen by geometry and checked by chemistry.

    Variants of the geometric guess (every option with positive evidence) flip the least certain
    options, one or two at a time; each is read as a neutral molecule and as a cation (at a cost of
    ``ION_COST``: pyridinium-like dyes exist, but a neutral reading is likelier). The cheapest valid
    reading wins; with none the guess is returned, with ``smiles`` None.
    """
    options = _hidden_hydrogen_options(seen)
    guess = frozenset(k for k, o in enumerate(options) if o.evidence > 0)
    pool = sorted(range(len(options)), key=lambda k: abs(options[k].evidence))[:FLIP_POOL]
    variants = {guess: 0.0}
    for size in (1, 2):
        for flips in combinations(pool, size):
            variants.setdefault(guess ^ frozenset(flips), sum(abs(options[k].evidence) for k in flips))
    readings = sorted(((cost + ION_COST * charge, charge, sorted(chosen)) for chosen, cost in variants.items()
                       for charge in (0, 1)), key=lambda t: t[0])
    for _cost, charge, chosen in readings:
        graph = _add_hydrogens(seen, [options[k] for k in chosen])
        mol = _perceive(graph, charge)
        if mol is not None:
            graph.smiles = Chem.MolToSmiles(Chem.RemoveHs(mol))
            graph.bond_orders = [mol.GetBondBetweenAtoms(i, j).GetBondTypeAsDouble() for i, j in graph.bonds]
            return graph
    return _add_hydrogens(seen, [options[k] for k in sorted(guess)])


def _add_hydrogens(graph: MolGraph, hidden: list[_HiddenHydrogen]) -> MolGraph:
    """A copy of ``graph`` with one H per option, at its hiding atom, with half that atom's confidence."""
    atoms, bonds, conf = list(graph.atoms), list(graph.bonds), list(graph.bond_confidence)
    for option in hidden:
        cover = atoms[option.atom if option.under is None else option.under]
        atoms.append(GraphAtom("H", cover.x, cover.y, cover.confidence / 2))
        bonds.append((option.atom, len(atoms) - 1))
        conf.append(cover.confidence / 2)
    return MolGraph(atoms, bonds, conf)


def graph_smiles(graph: MolGraph, charges: tuple[int, ...] = (0, 1)) -> str | None:
    """Canonical SMILES of the graph, or None when it is no valid molecule.

    Bond orders and formal charges are perceived by RDKit for each net charge in ``charges`` in turn.
    Valid means: one connected molecule, no unpaired electrons, and formal charges only on N, O, S or
    P (as in nitro groups or N-oxides); an ion's charged atoms bear no H (as in pyridinium dyes).
    """
    if not graph.atoms:
        return None
    for charge in charges:
        mol = _perceive(graph, charge)
        if mol is not None:
            return Chem.MolToSmiles(Chem.RemoveHs(mol))
    return None


def _perceive(graph: MolGraph, charge: int) -> Chem.Mol | None:
    """The graph as a sanitised RDKit molecule of net ``charge``, or None when it is not valid."""
    mol = Chem.RWMol()
    conformer = Chem.Conformer(len(graph.atoms))
    for k, atom in enumerate(graph.atoms):
        mol.AddAtom(Chem.Atom(atom.element))
        conformer.SetAtomPosition(k, Point3D(atom.x, atom.y, 0.0))
    for i, j in graph.bonds:
        mol.AddBond(i, j, Chem.BondType.SINGLE)
    mol.AddConformer(conformer, assignId=True)
    try:
        rdDetermineBonds.DetermineBondOrders(mol, charge=charge, embedChiral=False, maxIterations=10000)
        Chem.SanitizeMol(mol)
    except Exception:  # RDKit raises several types for graphs that are not molecules
        return None
    valid = len(Chem.GetMolFrags(mol)) == 1 and all(
        a.GetNumRadicalElectrons() == 0
        and (a.GetFormalCharge() == 0 or (a.GetSymbol() in CHARGEABLE
                                          and (charge == 0 or a.GetTotalNumHs(includeNeighbors=True) == 0)))
        for a in mol.GetAtoms())
    return mol if valid else None
