"""Scoring predicted molecular graphs against the truth, the paper's way, automatically.

Atoms are matched one-to-one by position (Hungarian assignment on x-y distance, pairs farther than
``MATCH_DISTANCE`` left unmatched). ``composition``: the same multiset of elements, nothing missing or
extra. ``structure``: every atom matched and the matched bond sets equal (elements aside). ``total``:
both. Per-atom precision/recall count matched pairs of the same element.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from raypipe.chem.molgraph import MolGraph
from raypipe.chem.molecule import Molecule

MATCH_DISTANCE = 0.7  # Å
CORRUGATION_BINS = ((0.0, 0.5, "0-50 pm"), (0.5, 1.0, "50-100 pm"), (1.0, 1.5, "100-150 pm"),
                    (1.5, float("inf"), ">150 pm"))


@dataclass(frozen=True)
class Score:
    structure: bool
    composition: bool
    total: bool
    precision: float
    recall: float

    def as_dict(self) -> dict:
        return asdict(self)


def score(predicted: MolGraph, truth: MolGraph | Molecule) -> Score:
    """Compare a predicted graph with the true molecule (or its graph).

    Atoms are matched one-to-one by position (Hungarian assignment, at most 0.7 Å apart). Returns a
    :class:`Score`: ``structure`` (the matched atoms carry the same bond topology, nothing missing or
    extra), ``composition`` (same elements), ``total`` (both), per-atom ``precision`` and ``recall``."""
    if isinstance(truth, Molecule):
        truth = MolGraph.from_molecule(truth)
    pred_el = [a.element for a in predicted.atoms]
    true_el = [a.element for a in truth.atoms]
    composition = Counter(pred_el) == Counter(true_el)
    mapping = _match(predicted.positions, truth.positions)
    same = sum(pred_el[p] == true_el[t] for p, t in mapping.items())
    structure = len(mapping) == len(true_el) == len(pred_el) and {
        frozenset((mapping[i], mapping[j])) for i, j in predicted.bonds
    } == {frozenset(b) for b in truth.bonds}
    return Score(
        structure=bool(structure),
        composition=bool(composition),
        total=bool(structure and composition),
        precision=same / len(pred_el) if pred_el else 0.0,
        recall=same / len(true_el) if true_el else 0.0,
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
    ``by_corrugation`` (the same per bin; NaN for an empty bin)."""

    def summary(items: list[Score]) -> dict:
        n = len(items)
        return {
            "n": n,
            **{k: (sum(getattr(s, k) for s in items) / n if n else float("nan"))
               for k in ("total", "structure", "composition", "precision", "recall")},
        }

    result = summary(scores)
    if corrugations is not None:
        result["by_corrugation"] = {
            label: summary([s for s, c in zip(scores, corrugations) if corrugation_bin(c) == label])
            for _, _, label in CORRUGATION_BINS
        }
    return result
