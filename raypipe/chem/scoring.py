"""Scoring predicted molecular graphs against the truth, the paper's way, automatically.

Atoms are matched one-to-one by position (Hungarian assignment on x-y distance, pairs farther than
``MATCH_DISTANCE`` left unmatched). ``composition``: the same multiset of elements, nothing missing or
extra. ``structure``: every atom matched and the matched bond sets equal (elements aside). ``total``:
both. Per-atom precision/recall count matched pairs of the same element. Where the truth's heights are known,
the **visible atoms** (within ``VISIBLE_DEPTH`` of the top atom: what a constant-height scan shows, the label
Graph-AFM trains on) are scored too: ``visible_recall`` (found with their element) and ``visible_exact``
(all of them found), so a corrugated molecule shows what is read of it rather than only 0 %.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from raypipe.chem.molgraph import MolGraph
from raypipe.chem.molecule import Molecule

MATCH_DISTANCE = 0.7  # Å
VISIBLE_DEPTH = 0.8  # Å below the top atom
CORRUGATION_BINS = ((0.0, 0.5, "0-50 pm"), (0.5, 1.0, "50-100 pm"), (1.0, 1.5, "100-150 pm"),
                    (1.5, float("inf"), ">150 pm"))


@dataclass(frozen=True)
class Score:
    structure: bool
    composition: bool
    total: bool
    precision: float
    recall: float
    visible_recall: float | None = None  # None where the truth's heights are unknown
    visible_exact: bool | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def score(predicted: MolGraph, truth: MolGraph | Molecule, heights: list[float] | None = None) -> Score:
    """Compare a predicted graph with the true molecule (or its graph).

    Atoms are matched one-to-one by position (Hungarian assignment, at most 0.7 Å apart). Returns a
    :class:`Score`: ``structure`` (the matched atoms carry the same bond topology, nothing missing or
    extra), ``composition`` (same elements), ``total`` (both), per-atom ``precision`` and ``recall``; with
    the truth's atom ``heights`` (z in Å, top up; a Molecule has them) ``visible_recall`` and
    ``visible_exact`` over its atoms within ``VISIBLE_DEPTH`` of the top."""
    if isinstance(truth, Molecule):
        heights = list(truth.positions[:, 2]) if heights is None else heights
        truth = MolGraph.from_molecule(truth)
    pred_el = [a.element for a in predicted.atoms]
    true_el = [a.element for a in truth.atoms]
    composition = Counter(pred_el) == Counter(true_el)
    mapping = _match(predicted.positions, truth.positions)
    same = sum(pred_el[p] == true_el[t] for p, t in mapping.items())
    structure = len(mapping) == len(true_el) == len(pred_el) and {
        frozenset((mapping[i], mapping[j])) for i, j in predicted.bonds
    } == {frozenset(b) for b in truth.bonds}
    visible_recall = visible_exact = None
    if heights is not None and len(heights) == len(true_el) and true_el:
        top = max(heights)
        visible = [t for t, z in enumerate(heights) if z >= top - VISIBLE_DEPTH]
        found = {t for p, t in mapping.items() if pred_el[p] == true_el[t]}
        hits = sum(t in found for t in visible)
        visible_recall, visible_exact = hits / len(visible), hits == len(visible)
    return Score(
        structure=bool(structure),
        composition=bool(composition),
        total=bool(structure and composition),
        precision=same / len(pred_el) if pred_el else 0.0,
        recall=same / len(true_el) if true_el else 0.0,
        visible_recall=visible_recall,
        visible_exact=visible_exact,
    )


def element_pairs(predicted: MolGraph, truth: MolGraph) -> list[tuple[str, str]]:
    """(true element, predicted element) for matched atoms, with "-" for a missed or spurious atom."""
    mapping = _match(predicted.positions, truth.positions)
    pairs = [(truth.atoms[t].element, predicted.atoms[p].element) for p, t in mapping.items()]
    pairs += [(a.element, "-") for t, a in enumerate(truth.atoms) if t not in mapping.values()]
    pairs += [("-", a.element) for p, a in enumerate(predicted.atoms) if p not in mapping]
    return pairs


def _match(pred: np.ndarray, true: np.ndarray) -> dict[int, int]:
    """Predicted index -> true index for atoms paired within MATCH_DISTANCE."""
    if len(pred) == 0 or len(true) == 0:
        return {}
    cost = np.hypot(*(pred[:, None, :] - true[None, :, :]).transpose(2, 0, 1))
    rows, cols = linear_sum_assignment(cost)
    return {int(r): int(c) for r, c in zip(rows, cols) if cost[r, c] <= MATCH_DISTANCE}


def corrugation_bin(corrugation: float) -> str:
    """The paper's corrugation category of a height spread given in Å."""
    return next(label for lo, hi, label in CORRUGATION_BINS if lo <= corrugation < hi)


def aggregate(scores: list[Score], corrugations: list[float] | None = None) -> dict:
    """Fractions of total/structure/composition and mean precision/recall, overall and by the paper's
    corrugation bins (0-50, 50-100, 100-150, > 150 pm) when ``corrugations`` (Å, one per score) are given.
    Returns a dict: ``n``, ``total``, ``structure``, ``composition``, ``precision``, ``recall`` and
    ``by_corrugation`` (the same per bin; NaN for an empty bin); ``visible_recall`` and ``visible_exact``
    where the scores have them."""

    def summary(items: list[Score]) -> dict:
        n = len(items)
        out = {
            "n": n,
            **{k: (sum(getattr(s, k) for s in items) / n if n else float("nan"))
               for k in ("total", "structure", "composition", "precision", "recall")},
        }
        seen = [s for s in items if s.visible_recall is not None]
        if seen:
            out["visible_recall"] = sum(s.visible_recall for s in seen) / len(seen)
            out["visible_exact"] = sum(s.visible_exact for s in seen) / len(seen)
        return out

    result = summary(scores)
    if corrugations is not None:
        result["by_corrugation"] = {
            label: summary([s for s, c in zip(scores, corrugations) if corrugation_bin(c) == label])
            for _, _, label in CORRUGATION_BINS
        }
    return result
