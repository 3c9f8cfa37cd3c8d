"""Molecular graphs read back from ball-and-stick depictions.

:func:`extract_graph` decodes true and predicted depictions alike:

1. every pixel is assigned the nearest palette colour (black background or an element colour);
2. balls: for each element, the fraction of a ball-sized disc around each pixel that holds the
   element's colour is computed (hidden parts, i.e. other foreground, count half); local maxima above
   0.6 are atoms (sticks are too thin to reach it), one atom per place, except that a heavy atom may
   sit half under an H. An atom's confidence is how full its ball is. With a model's atom-centre map the
   atoms sit at its peaks instead, each of the element most of the colours around it show, or, with the
   model's counts too, the heavy atoms' elements chosen together to agree with them
   (:mod:`raypipe.chem.agreement`);
3. bonds: atom pairs closer (in projection) than 1.25 x the sum of their covalent radii whose joining
   line runs over the foreground for at least 80% of its length, with no heavy atom on its middle;
   confidence is that fraction. One bond per H, and no false triangles; an H left without a bond (its
   stick lost) takes the nearest heavy atom within 1.6 x their bond length;
4. hidden hydrogens and chemistry: a top view hides the H below another H of a CH2/CH3/NH2 group, or
   below its atom. Where they are is guessed from the geometry, and the guess is checked by chemistry:
   the cheapest variant that RDKit's bond-order perception reads as one closed-shell molecule wins.
   Variants also relabel one or two atoms whose colours leave their element in doubt (an atom's
   ``alternatives``: a ring N drawn half in carbon's colour is an N, not a C with an invented H), or leave
   out the faintest H, or an H or an O drawn on a ring O (an O or N its heavy neighbours already fill), one
   or two of them, or rebuild an alkyne whose two carbons merged into one ball, or move an H-bond's H drawn
   on the wrong end to the O or N with room for it, or read an F drawn with an H as an OH; a reading
   that separates charges costs more than a neutral one, and a charged atom may be read as the neutral
   element with its electrons (a nitrile's N drawn as O is an N, not an oxonium); cumulated double bonds
   cost more too, and an S or P is perceived with its lighter neighbour's valence as well (a thiophene
   amide is neutral, not a sulfonium enolate); where every reading is dear, a carbon drawn without H may be
   read as N (an imide's N drawn in carbon's colour);
5. the formula counts the atoms; the SMILES is that molecule's, or None when no variant is valid.

The work is in three layers: :mod:`raypipe.chem.molgraph` (the graph type, all that scoring and reports
need), :mod:`raypipe.chem.pixels` (steps 1-3) and :mod:`raypipe.chem.hydrogens` (steps 4-5). This
module composes them.
"""

from __future__ import annotations

import numpy as np

from raypipe.chem.agreement import Counts, ElementCounts
from raypipe.chem.hydrogens import graph_smiles, with_hidden_hydrogens
from raypipe.chem.molgraph import GraphAtom, MolGraph
from raypipe.chem.pixels import atoms_and_bonds, classify_pixels
from raypipe.window import DEFAULT_WINDOW, Window

__all__ = ["GraphAtom", "MolGraph", "classify_pixels", "extract_graph", "graph_smiles", "read_graph"]


def extract_graph(depiction: np.ndarray, window: Window | None = None, centres: np.ndarray | None = None,
                  counts: Counts | None = None) -> MolGraph:
    """Decode an (S, S, 3) uint8 depiction into a :class:`MolGraph` (positions in Å on ``window``).

    ``centres``: the (S, S) atom-centre probabilities of a model with that output (``Model.infer``); the
    atoms are then read at its peaks, their elements, the bonds and the hidden hydrogens from the
    depiction as before (:mod:`raypipe.chem.pixels`). ``counts``: atoms of each element (a model's count
    output, ``Model.infer``; or a known formula, ``ElementCounts.known``); with a centre map the heavy atoms'
    elements then agree with it (:mod:`raypipe.chem.agreement`), and with a known formula the number of heavy
    atoms and of hydrogens move towards it too."""
    window = window or DEFAULT_WINDOW
    if depiction.ndim != 3 or depiction.shape[2] < 3 or depiction.shape[:2] != (window.size, window.size):
        raise ValueError(f"depiction of shape {depiction.shape} does not fit a {window.size}-pixel window")
    if centres is not None and np.shape(centres) != depiction.shape[:2]:
        raise ValueError(f"centre map of shape {np.shape(centres)} does not fit the depiction {depiction.shape[:2]}")
    known = counts.counts.get("H") if isinstance(counts, ElementCounts) and counts.atoms else None
    return with_hidden_hydrogens(atoms_and_bonds(classify_pixels(depiction[..., :3]), window, centres, counts),
                                 None if known is None or centres is None else int(round(known)),
                                 elements_counted=counts is not None and centres is not None)


def read_graph(depiction: np.ndarray, window: Window | None = None, centres: np.ndarray | None = None,
               counts: Counts | None = None) -> MolGraph:
    """:func:`extract_graph` for scoring and ranking: a depiction that shows no molecule (a
    :class:`~raypipe.errors.DepictionError`, e.g. an early model's noise) reads as the empty graph, which
    scores as wrong, instead of stopping a validation or a scale search."""
    from raypipe.errors import DepictionError

    try:
        return extract_graph(depiction, window, centres, counts)
    except DepictionError:
        return MolGraph([], [])
