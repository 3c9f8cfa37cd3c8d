"""Pixels -> atoms and bonds: the first two steps of reading a depiction (see :mod:`raypipe.chem.graph`).

1. every pixel is assigned the nearest palette colour (black background or an element colour);
2. balls: for each element, the fraction of a ball-sized disc around each pixel that holds the
   element's colour is computed (hidden parts, i.e. other foreground, count half); local maxima above
   0.6 are atoms (sticks are too thin to reach it), one atom per place, except that a heavy atom may
   sit half under an H. An atom's confidence is how full its ball is;
3. bonds: atom pairs closer (in projection) than 1.25 x the sum of their covalent radii whose joining
   line runs over the foreground for at least 80% of its length, with no heavy atom on its middle;
   confidence is that fraction. One bond per H, and no false triangles.

With a model's atom-centre map (config ``centres``) step 2 reads the map instead: atoms sit at its peaks
(``CENTRE_THRESHOLD``), each of the element whose colour the depiction shows most around the peak. A
blurred predicted depiction merges the balls of a ring into a thick ring, where no ball can be told
apart; the map still peaks at the atoms.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from raypipe.chem.agreement import Counts, ElementCounts, agree_elements, alternatives
from raypipe.chem.elements import COVALENT_RADII, ELEMENTS, ball_radius, palette
from raypipe.chem.molgraph import GraphAtom, MolGraph, ideal_length
from raypipe.errors import DepictionError
from raypipe.window import Window

BOND_FACTOR = 1.25
MIN_BALL_FILL = 0.6
MIN_OWN_FILL = 0.3
OCCLUDED_WEIGHT = 0.5
MIN_UNDER_H_FILL = 0.66  # a heavy atom half under an H: its ball at least this full
MIN_LINE_FILL = 0.8
ORPHAN_REACH = 1.6  # an H left without a bond takes the nearest heavy atom within this x their ideal length
CENTRE_THRESHOLD = 0.3  # an atom-centre map's local maximum at least this high is an atom
WEAK_THRESHOLD = 0.1  # ... and one at least this high may be, where a known formula lacks atoms
CENTRE_VOTE_RADIUS = 2.5  # pixels around a centre whose depiction colours choose its element
# more atoms than this in one depiction is not a molecule (a flat molecule filling the 18 A window, H
# included, has fewer than ~250): extraction stops there instead of pairing thousands of noise blobs
MAX_ATOMS = 300


class Ball(NamedTuple):
    """A ball found in the depiction, before one atom per place is kept."""

    fill: float  # how full its disc is (hidden parts counted half), at most 1
    element: str
    col: float  # centre, pixels
    row: float
    own: tuple[float, float]  # (col, row) of the centroid of its own colour


def atoms_and_bonds(labels: np.ndarray, window: Window, centres: np.ndarray | None = None,
                    counts: Counts | None = None) -> MolGraph:
    """The atoms and bonds a labelled depiction shows (no hidden hydrogens yet); with ``centres`` (a model's
    (S, S) atom-centre probabilities) the atoms are read from that map (:func:`atoms_at_centres`), their
    elements agreeing with ``counts`` where given (a model's count head)."""
    atoms = find_atoms(labels, window) if centres is None else atoms_at_centres(labels, centres, window, counts)
    _check_count(len(atoms))
    # sticks are thinner than a pixel and a half: follow them on the foreground grown by one pixel
    bonds, bond_conf = find_bonds(atoms, ndimage.binary_dilation(labels > 0, np.ones((3, 3), bool)), window)
    return clean_bonds(MolGraph(atoms, bonds, bond_conf))


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


def find_atoms(labels: np.ndarray, window: Window) -> list[GraphAtom]:
    balls: list[Ball] = []
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
            balls.append(Ball(float(min(peak, 1.0)), element, c, r, own))
    # one atom per place: a weaker ball closer than 0.6 ball radii to a kept one is dropped, unless
    # it is a heavy atom whose visible crescent lies off the centre of a hydrogen sitting on top of it
    balls.sort(key=lambda b: -b.fill)
    kept: list[Ball] = []
    for ball in balls:
        limit = 0.6 * ball_radius(ball.element) / window.pixel
        if all(np.hypot(ball.col - k.col, ball.row - k.row) >= limit or _under_hydrogen(ball, k, window)
               for k in kept):
            kept.append(ball)
            _check_count(len(kept))
    return _in_reading_order([(k.element, k.col, k.row, k.fill) for k in kept], window)


def _check_count(n: int) -> None:
    if n > MAX_ATOMS:
        raise DepictionError(f"the depiction shows more than {MAX_ATOMS} atoms (MAX_ATOMS): not one molecule's "
                             "depiction (an untrained model, or scans unlike the model's training data?)")


def _in_reading_order(found: list[tuple], window: Window) -> list[GraphAtom]:
    """(element, col, row, confidence[, alternatives]) -> atoms in Å, top to bottom, left to right."""
    if not found:
        return []
    xy = window.to_angstrom(np.array([(f[1], f[2]) for f in found]))
    order = np.lexsort((xy[:, 0], -xy[:, 1]))
    return [GraphAtom(found[i][0], float(xy[i, 0]), float(xy[i, 1]), float(found[i][3]), *found[i][4:])
            for i in order]


def atoms_at_centres(labels: np.ndarray, centres: np.ndarray, window: Window,
                     counts: Counts | None = None) -> list[GraphAtom]:
    """Atoms at the local maxima (over +-2 pixels) of an atom-centre map that reach ``CENTRE_THRESHOLD``:
    each placed at the map's weighted centre over the peak's 3 x 3 pixels, of the element the labelled
    depiction shows most within ``CENTRE_VOTE_RADIUS`` pixels (a peak over background is dropped), with
    the peak's height as its confidence, and the other heavy elements its votes allow as its
    ``alternatives`` (:func:`raypipe.chem.agreement.alternatives`; none with counts). With ``counts`` (atoms
    of each element: a model's count output or a known formula) the heavy atoms' elements are chosen
    together from those votes to agree with it
    (:func:`raypipe.chem.agreement.agree_elements`); a known formula may also take a weaker peak (down to
    ``WEAK_THRESHOLD``) for an atom it lacks, or drop a surplus one."""
    centres = np.asarray(centres, dtype=np.float32)
    # counts that may change the number of atoms (a known formula) may also take weaker peaks
    low = WEAK_THRESHOLD if isinstance(counts, ElementCounts) and counts.atoms else CENTRE_THRESHOLD
    peaks = (centres == ndimage.maximum_filter(centres, size=5, mode="constant")) & (centres >= low)
    blobs, n = ndimage.label(peaks)
    size = labels.shape[0]
    grid = np.arange(size) + 0.5  # pixel centres
    found = []
    for r, c in ndimage.center_of_mass(peaks, blobs, range(1, n + 1)):
        r0, c0 = int(round(r)), int(round(c))
        rows, cols = slice(max(r0 - 1, 0), r0 + 2), slice(max(c0 - 1, 0), c0 + 2)
        w = centres[rows, cols]
        row = float(w.sum(1) @ grid[rows] / w.sum())
        col = float(w.sum(0) @ grid[cols] / w.sum())
        reach = int(np.ceil(CENTRE_VOTE_RADIUS))
        rr, cc = slice(max(r0 - reach, 0), r0 + reach + 1), slice(max(c0 - reach, 0), c0 + reach + 1)
        disc = (grid[rr, None] - row) ** 2 + (grid[None, cc] - col) ** 2 <= CENTRE_VOTE_RADIUS**2
        votes = np.bincount(labels[rr, cc][disc], minlength=len(ELEMENTS) + 1)[1:]
        if votes.any():
            found.append((votes / votes.sum(), col, row, float(centres[r0, c0])))
    elements = agree_elements(np.array([f[0] for f in found]), counts,
                              strengths=np.array([f[3] for f in found]), threshold=CENTRE_THRESHOLD)
    # where no count chose the elements, chemistry may still relabel an atom its colours leave in doubt
    others = [alternatives(f[0], e) if e is not None and not counts else () for e, f in zip(elements, found)]
    return _in_reading_order([(e, *f[1:], o) for e, f, o in zip(elements, found, others) if e is not None],
                             window)


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


def _under_hydrogen(ball: Ball, kept: Ball, window: Window) -> bool:
    """True when ``ball`` is a heavy atom partly hidden below the H ``kept``: its ball is at
    least ``MIN_UNDER_H_FILL`` full and its own colour forms a crescent whose centroid lies over half an
    H radius away from the H's centre (the grey rim of a blurred H is thinner, and centred on it)."""
    if kept.element != "H" or ball.element == "H" or ball.fill < MIN_UNDER_H_FILL:
        return False
    return bool(np.hypot(ball.own[0] - kept.col, ball.own[1] - kept.row) > 0.5 * ball_radius("H") / window.pixel)


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


def find_bonds(atoms: list[GraphAtom], foreground: np.ndarray, window: Window) -> tuple[list, list]:
    if len(atoms) < 2:
        return [], []
    xy = np.array([(a.x, a.y) for a in atoms])
    cov = np.array([COVALENT_RADII[a.element] for a in atoms])
    dist = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    limit = BOND_FACTOR * (cov[:, None] + cov[None, :])
    hydrogen = cov == COVALENT_RADII["H"]
    limit[hydrogen[:, None] & hydrogen[None, :]] = 0  # no H-H bonds
    pix = window.to_pixels(xy)
    # per atom, once: the half ball radius a third atom must come within to block a bond, heavy or not
    # (computing these per candidate pair made a noisy depiction of thousands of blobs take many minutes)
    half_radius = 0.5 * np.array([ball_radius(a.element) for a in atoms])
    heavy = np.array([a.element != "H" for a in atoms])
    bonds, confidence = [], []
    for i, j in zip(*np.nonzero(np.triu(dist <= limit, k=1))):
        steps = max(int(np.hypot(*(pix[j] - pix[i])) * 2), 2)
        t = np.linspace(0.0, 1.0, steps)
        pts = pix[i][None, :] + t[:, None] * (pix[j] - pix[i])[None, :]
        cols = np.clip(pts[:, 0].astype(int), 0, foreground.shape[1] - 1)
        rows = np.clip(pts[:, 1].astype(int), 0, foreground.shape[0] - 1)
        fill = float(foreground[rows, cols].mean())
        if fill >= MIN_LINE_FILL and not _atom_between(xy, i, j, half_radius, heavy):
            bonds.append((int(i), int(j)))
            confidence.append(fill)
    return bonds, confidence


def _atom_between(xy: np.ndarray, i: int, j: int, half_radius: np.ndarray, heavy: np.ndarray) -> bool:
    """True when a third, heavy atom sits on the middle half of segment i-j (so i and j are not bonded):
    within half its ball radius (``half_radius``, per atom) of the segment.

    Hydrogens never block: one bonds to a single atom, so an H projected over a bond is not a link.
    """
    axis = xy[j] - xy[i]
    t = (xy - xy[i]) @ axis / float(axis @ axis)
    off = np.abs((xy[:, 0] - xy[i, 0]) * axis[1] - (xy[:, 1] - xy[i, 1]) * axis[0]) / np.hypot(*axis)
    between = (t > 0.25) & (t < 0.75) & (off < half_radius) & heavy
    between[[i, j]] = False
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


def clean_bonds(graph: MolGraph) -> MolGraph:
    """Keep one bond per H (the shortest relative to its ideal length), then drop false triangle edges, then
    bond an H left without a bond to the nearest heavy atom within ``ORPHAN_REACH`` of their ideal length.

    In that order: an H seen bonded to both ends of a real bond must not make it a false triangle.
    """
    atoms, bonds, conf = graph.atoms, graph.bonds, graph.bond_confidence
    xy = graph.positions
    stretch = [np.hypot(*(xy[i] - xy[j])) / ideal_length(atoms, i, j) for i, j in bonds]
    keep = set(range(len(bonds)))
    for h, atom in enumerate(atoms):
        if atom.element == "H":
            mine = sorted((stretch[b], b) for b in keep if h in bonds[b])
            keep -= {b for _, b in mine[1:]}
    kept = sorted(keep)
    false = _false_triangle_edges(xy, [bonds[b] for b in kept])
    kept = [b for n, b in enumerate(kept) if n not in false]
    bonds, conf = [bonds[b] for b in kept], [conf[b] for b in kept]
    # an H bonds to one atom: one whose stick the depiction lost (too faint or too short a line) takes the
    # nearest heavy atom within reach, with the H's own confidence as the bond's
    bonded = {k for bond in bonds for k in bond}
    heavy = [k for k, a in enumerate(atoms) if a.element != "H"]
    for h, atom in enumerate(atoms):
        if atom.element == "H" and h not in bonded and heavy:
            reach = [np.hypot(*(xy[h] - xy[k])) / ideal_length(atoms, h, k) for k in heavy]
            k = int(np.argmin(reach))
            if reach[k] <= ORPHAN_REACH:
                bonds.append((min(h, heavy[k]), max(h, heavy[k])))
                conf.append(atom.confidence)
    return MolGraph(list(atoms), bonds, conf)
