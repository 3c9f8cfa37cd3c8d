"""Making a graph's elements agree with an element count: the step between the atoms a depiction shows and
the graph, where a model also says how many atoms of each element the molecule holds (its count head,
config ``counts``; :mod:`raypipe.model.heads`).

Each atom read at a peak of the atom-centre map comes with its **votes**: the share of each element's
colour in the depiction around the peak (:func:`raypipe.chem.pixels.atoms_at_centres`). On its own every
atom takes the element with most votes. With a count, the heavy atoms' elements are chosen together: an
assignment (``scipy.optimize.linear_sum_assignment``) of heavy atoms to element *slots*, ``round(n_e)``
slots for each heavy element ``e`` at the cost ``-log(vote + VOTE_FLOOR)`` and, beyond the count, more
slots of every element at that cost plus ``penalty`` (nats). So an atom keeps its own element where the
count has room for it; where the count has too many of one element and too few of another, the atoms
whose votes are most divided change first; and no count, however wrong, can relabel an atom whose votes
differ by more than ``penalty``. With a model's counts, hydrogens (whose count includes the ones a top view
hides) and the number of atoms are left as the depiction shows them.

Counts come from a model's count output (trusted as far as ``PENALTY``) or from what the scientist knows:
the molecule's formula in the scan's sidecar (:meth:`ElementCounts.known`), trusted beyond the largest cost
difference (``KNOWN_PENALTY``; ~3.9 nats), so that every heavy atom read takes the formula's elements as far
as their number allows. A known formula also moves the number of heavy atoms: the map's weaker peaks (down to
``raypipe.chem.pixels.WEAK_THRESHOLD``) become candidates, each formula slot filled earns ``MISSING``, a
weak peak taken costs ``WEAK_COST`` and a peak dropped ``DROP_WEIGHT`` x its height; and the hydrogens, in
:func:`raypipe.chem.hydrogens.with_hidden_hydrogens`.

Examples:
    Two heavy atoms read as bromine, one of them half iodine; the count says one Br and one I:

    >>> import numpy as np
    >>> votes = np.array([[0, 0.9, 0, 0, 0, 0, 0, 0, 0.1, 0],     # C
    ...                   [0, 0, 0, 0, 0, 0, 0, 0, 1.0, 0],       # Br
    ...                   [0, 0, 0, 0, 0, 0, 0, 0, 0.55, 0.45]])  # Br, or I
    >>> agree_elements(votes, {"C": 1, "Br": 1, "I": 1})
    ['C', 'Br', 'I']
    >>> agree_elements(votes, None)
    ['C', 'Br', 'Br']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from raypipe.chem.elements import ELEMENTS, formula_counts

VOTE_FLOOR = 0.02  # added to every vote before its log: an element no pixel shows still costs a finite ~3.9
PENALTY = 2.0  # nats an element costs beyond a model's count of it
KNOWN_PENALTY = 5.0  # ... beyond a known formula's: more than any vote can outweigh
# where the number of heavy atoms may change too (``ElementCounts.atoms``: a known formula):
MISSING = 2.0  # nats each atom the formula has and the graph lacks costs
DROP_WEIGHT = 6.0  # nats dropping an atom read at a peak costs, times the peak's height
WEAK_COST = 1.0  # nats taking a weak peak (below the graph's own threshold) as an atom costs
HEAVY = [e for e in ELEMENTS if e != "H"]


@dataclass(frozen=True)
class ElementCounts:
    """Counts of each element with how far to trust them: ``penalty``, the nats an element costs beyond its
    count (a plain mapping of counts is trusted as a model's, ``PENALTY``), and ``atoms``, whether they may
    also change the number of heavy atoms (drop surplus ones, take weak peaks for missing ones)."""

    counts: Mapping[str, float]
    penalty: float = PENALTY
    atoms: bool = False

    @classmethod
    def known(cls, formula: str) -> "ElementCounts":
        """A formula the scientist knows (``KNOWN_PENALTY``, ``atoms``); ValueError for an element the model
        does not draw.

        Examples:
            >>> ElementCounts.known("C6H3BrCl2").counts["Cl"], ElementCounts.known("C6H3BrCl2").penalty
            (2.0, 5.0)
        """
        return cls(dict(zip(ELEMENTS, map(float, formula_counts(formula)))), KNOWN_PENALTY, atoms=True)


Counts = Mapping[str, float] | ElementCounts  # what graph extraction takes as ``counts``


def agree_elements(votes: np.ndarray, counts: Counts | None, *, penalty: float | None = None,
                   strengths: np.ndarray | None = None, threshold: float = 0.0) -> list[str | None]:
    """Elements for atoms with ``votes`` ((n, len(ELEMENTS)) shares of each element's colour around them, in
    ``ELEMENTS`` order) that agree with ``counts`` (expected atoms of each element, or an
    :class:`ElementCounts`; None or empty: every atom takes its most voted element). ``penalty``: overrides
    the counts' own. ``strengths``: the peaks' heights; those below ``threshold`` are weak, not atoms (None)
    unless counts that may change the number of atoms take them. Module docs."""
    atoms = isinstance(counts, ElementCounts) and counts.atoms
    if isinstance(counts, ElementCounts):
        penalty = counts.penalty if penalty is None else penalty
        counts = counts.counts
    penalty = PENALTY if penalty is None else penalty
    votes = np.asarray(votes, dtype=np.float64).reshape(-1, len(ELEMENTS))
    strengths = np.ones(len(votes)) if strengths is None else np.asarray(strengths, dtype=np.float64)
    weak = strengths < threshold
    chosen: list[str | None] = [None if w else ELEMENTS[k] for k, w in zip(votes.argmax(axis=1), weak)]
    heavy = [i for i, e in enumerate(ELEMENTS[k] for k in votes.argmax(axis=1))
             if e != "H" and (atoms or not weak[i])]
    if not counts or not heavy:
        return chosen
    columns = [ELEMENTS.index(e) for e in HEAVY]
    cost = -np.log(votes[np.ix_(heavy, columns)] / np.maximum(votes[heavy][:, columns].sum(1, keepdims=True), 1e-12)
                   + VOTE_FLOOR)  # (m, heavy elements): votes among the heavy elements only
    if atoms:  # a weak peak costs more as an atom; filling the formula earns MISSING a slot
        cost = cost + WEAK_COST * weak[heavy][:, None]
    reward = MISSING if atoms else 0.0
    slots, slot_cost = [], []
    for k, element in enumerate(HEAVY):
        room = int(round(max(float(counts.get(element, 0.0)), 0.0)))
        slots += [element] * (room + len(heavy))
        slot_cost += [cost[:, k] - reward] * room + [cost[:, k] + penalty] * len(heavy)
    if atoms:  # or no atom at all: free for a weak peak, the dearer the higher a peak stands
        drop = np.where(weak[heavy], 0.0, DROP_WEIGHT * strengths[heavy])
        for n in range(len(heavy)):
            slots.append(None)
            slot_cost.append(np.where(np.arange(len(heavy)) == n, drop, np.inf))
    rows, cols = linear_sum_assignment(np.stack(slot_cost, axis=1))
    for r, c in zip(rows, cols):
        chosen[heavy[r]] = slots[c]
    return chosen


RELABEL_LIMIT = 3.0  # nats: an element whose votes lie further below the chosen one's is no alternative


def alternatives(votes: np.ndarray, chosen: str) -> tuple[tuple[str, float], ...]:
    """The other heavy elements an atom with ``votes`` (shares of each element's colour, ``ELEMENTS`` order)
    may be, each with its cost against ``chosen`` in nats (``-log(vote + VOTE_FLOOR)`` among the heavy
    elements, as :func:`agree_elements` counts it), cheapest first, up to ``RELABEL_LIMIT``; none for an H.

    Examples:
        A ring atom whose colours are 70 % carbon and 30 % nitrogen:

        >>> votes = np.zeros(len(ELEMENTS)); votes[ELEMENTS.index("C")], votes[ELEMENTS.index("N")] = 0.7, 0.3
        >>> alternatives(votes, "C")
        (('N', 0.81),)
    """
    if chosen == "H":
        return ()
    columns = [ELEMENTS.index(e) for e in HEAVY]
    heavy = np.asarray(votes, dtype=np.float64)[columns]
    cost = -np.log(heavy / max(heavy.sum(), 1e-12) + VOTE_FLOOR)
    cost = cost - cost[HEAVY.index(chosen)]
    return tuple((HEAVY[k], round(float(cost[k]), 2)) for k in np.argsort(cost, kind="stable")
                 if HEAVY[k] != chosen and cost[k] <= RELABEL_LIMIT)


def counts_formula(counts: Mapping[str, float] | None) -> str | None:
    """The Hill formula of rounded ``counts`` (a count head's own formula), None without counts.

    Examples:
        >>> counts_formula({"C": 5.8, "H": 4.2, "Br": 0.9, "N": 0.3})
        'C6H4Br'
    """
    if counts is None:
        return None
    from raypipe.chem.molecule import hill_formula

    return hill_formula([e for e, n in counts.items() for _ in range(int(round(max(float(n), 0.0))))])
