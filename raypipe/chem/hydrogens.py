"""Hidden hydrogens and chemistry: the last step of reading a depiction (see :mod:`raypipe.chem.graph`).

A top view hides the H below another H of a CH2/CH3/NH2 group, or below its atom. Where they are is
guessed from the geometry, and the guess is checked by chemistry: the cheapest variant that RDKit's
bond-order perception reads as one closed-shell molecule wins; its SMILES and bond orders are kept.
The variants also relabel the atoms whose colours leave their element in doubt (``GraphAtom.alternatives``,
at ``RELABEL_WEIGHT`` per nat of their votes): chemistry picks between a ring N read as C plus an H nobody
saw, and the N its colours also show; and they may leave out one or two atoms: the faintest H (``WEAK_H``), an
H drawn on an O or N whose heavy neighbours already fill its valence (``OVERFULL_ELEMENTS``), or a one-bond
atom drawn there (``OVERFULL_TERMINALS``); and they rebuild an alkyne drawn short (``SP_CHAIN_COST``: its two
carbons merged into one ball), and move an H that overfills its O or N to a nearby O or N with room
(``REHOME_COST``: an H-bond's H drawn on the wrong end), and read an F drawn with an H as O
(``HYDROXY_HALOGEN``: an OH drawn in fluorine's colour). A reading that
separates charges (a zwitterion) pays ``SEPARATION_COST`` a pair, so a neutral one a little dearer wins, and
one with cumulated double bonds ``CUMULENE_COST`` an atom; a charged atom of the cheapest reading may be read
as the neutral element with its electrons (``ISOELECTRONIC``), and where every reading is dear a carbon drawn
without H as N (``NITROGEN_GUESS``). An S or P is perceived with the valence of O or N too
(``PERCEIVE_LIGHTER``), where RDKit would try its higher valences first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import rdDetermineBonds
from rdkit.Geometry import Point3D

from raypipe.chem.molgraph import GraphAtom, MolGraph, ideal_length

RDLogger.DisableLog("rdApp.*")  # invalid readings are expected here: each variant is tried, quietly

VALENCE = {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1, "S": 2, "P": 3, "Cl": 1, "Br": 1, "I": 1}
# Evidence for a hidden hydrogen (see _hidden_hydrogen_options), in units of
TWIN_LENGTH, TWIN_SCALE = 0.86, 0.05  # 0.05 of a visible X-H's projected/ideal length below 0.86,
RESIDUAL_SCALE = 0.1  # 0.1 of the bond-direction sum (unit bonds) a hidden H would cancel,
# for a carbon without visible H: 0.05 of its sum above 1.2 (almost always against an H below it: a model's
# blurred positions leave sums of 0.45-1.2 on flat rings, where 0.45 added an H below 1 carbon in 5 flat molecules)
UNDER_RESIDUAL, UNDER_SCALE = 1.2, 0.05
NITROGEN_TRUST, NITROGEN_UNDER_EVIDENCE = 0.25, -4.0  # scaled for N; an N without visible H: -4
ION_COST = 3.0  # the evidence a cation reading costs against a neutral one
SEPARATION_COST = 2.0  # ... and each pair of opposite charges a reading separates (zwitterions, nitro groups)
FLIP_POOL = 6  # the least certain options that chemistry may overrule
CHARGEABLE = {"N", "O", "S", "P"}


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
    below it; its bond directions then sum far from zero, but a model's blurred positions do that on flat
    rings too, so only a very lopsided sum counts for it, and an H below a carbon is mostly chemistry's
    call (a flip, where no reading without it is valid). Nitrogen, pyramidal with a lone
    pair, gives weaker hints (scaled by ``NITROGEN_TRUST``), which chemistry overrules more easily.
    An H forced by chemistry where the geometry saw no twin goes below the atom itself.
    """
    xy = graph.positions
    options = []
    for x, (atom, neighbours) in enumerate(zip(graph.atoms, graph.neighbours)):
        if atom.element not in ("C", "N") or len(neighbours) >= VALENCE[atom.element]:
            continue
        units = {k: (xy[k] - xy[x]) / ideal_length(graph.atoms, x, k) for k in neighbours}
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


def with_hidden_hydrogens(seen: MolGraph, hydrogens: int | None = None, *, elements_counted: bool = False) -> MolGraph:
    """The seen graph plus the hydrogens a top view hides, chosen by geometry and checked by chemistry.

    Variants of the geometric guess (every option with positive evidence) flip the least certain
    options, one or two at a time; each is read as a neutral molecule and as a cation (at a cost of
    ``ION_COST``: pyridinium-like dyes exist, but a neutral reading is likelier), and each pair of opposite
    charges RDKit's perception needs costs ``SEPARATION_COST`` (nitro groups exist, zwitterions drawn
    from a misread atom are commoner); without a known
    formula, so are the seen graph's own variants (:func:`_seen_variants`: atoms relabelled to their
    ``alternatives``, the faintest H or one on a full O or N left out). The cheapest valid reading wins, or
    the same with a charged atom read as the neutral element with its electrons where that is cheaper
    (:func:`_cheapest_valid`), and where every reading is dear, with a carbon drawn without H read as N
    (``NITROGEN_GUESS``); with none the guess is returned, with ``smiles`` None.

    ``hydrogens``: the molecule's known number of hydrogens (a known formula). Variants then also leave out
    the weakest seen hydrogens (a surplus drawn on a corrugated molecule; each costs ``H_DROP`` x its
    confidence), and every hydrogen a reading has more or fewer than that costs ``H_MISMATCH``.
    ``elements_counted``: the heavy atoms' elements were chosen to agree with counts (a model's count
    output): no carbon is then read as N from chemistry alone.
    """
    if hydrogens is None:
        return _cheapest_valid(_seen_variants(seen), None, guess_nitrogen=not elements_counted)
    weakest = sorted((k for k, a in enumerate(seen.atoms) if a.element == "H"), key=lambda k: seen.atoms[k].confidence)
    surplus = max(len(weakest) - hydrogens, 0)
    bases = []
    for drop in range(surplus, min(surplus + H_DROP_EXTRA, len(weakest)) + 1):
        gone = set(weakest[:drop])
        bases.append((_without(seen, gone), H_DROP * sum(seen.atoms[k].confidence for k in gone)))
    return _cheapest_valid(bases, hydrogens, guess_nitrogen=False)


RELABEL_WEIGHT = 1.0  # what relabelling an atom to one of its alternatives costs, per nat of its votes
RELABEL_POOL = 4  # the cheapest relabellings tried, one or two at a time
WEAK_H, WEAK_H_DROP = 0.5, 2.0  # a seen H weaker than this may be left out, at this x its confidence
WEAK_H_POOL = 1  # ... the faintest this many (1: 26.2 and 29.3 % on two val sets, 2 or 3: 26.2 and 28.5 %, slower)


def _seen_variants(seen: MolGraph) -> list[tuple[MolGraph, float]]:
    """``seen`` and its variants, with their costs: one or two atoms relabelled to an alternative element (the
    cheapest ``RELABEL_POOL``, at ``RELABEL_WEIGHT`` per nat, and an F drawn with an H to O,
    :func:`_hydroxy_halogens`), so that a ring N whose colours read C needs no invented H to be a molecule once it
    is read as N; and one or two atoms left out (at ``WEAK_H_DROP`` x their
    confidence): the faintest H (``WEAK_H_POOL``), where fainter than ``WEAK_H``, any H on an atom its heavy
    neighbours already fill (:func:`_overfull_hydrogens`), and, with ``OVERFULL_TERMINALS``, any one-bond heavy
    atom on such an atom (:func:`_overfull_terminals`), up to ``DROPS_AT_ONCE`` of them together: a faint H drawn
    on a carbonyl O, an H or an O drawn on a ring O, or both; and an H that overfills its O or N moved to a
    nearby one with room (:func:`_rehomed`). The same again of each alkyne the depiction drew short, rebuilt
    (:func:`_sp_chains`)."""
    return [(graph, start + cost) for chain, start in [(seen, 0.0)] + _sp_chains(seen)
            for graph, cost in _variants_of(chain)]


def _variants_of(seen: MolGraph) -> list[tuple[MolGraph, float]]:
    """:func:`_seen_variants` of one graph, the alkynes as drawn."""
    pool = sorted(((cost, k, element) for k, atom in enumerate(seen.atoms)
                   for element, cost in atom.alternatives), key=lambda t: t[0])[:RELABEL_POOL]
    if HYDROXY_HALOGEN is not None:
        pool += [(HYDROXY_HALOGEN, k, "O") for k in _hydroxy_halogens(seen)]
    bases = [(seen, 0.0)]
    for size in (1, 2):
        for picks in combinations(pool, size):
            if len({k for _, k, _ in picks}) == size:
                bases.append((_relabelled(seen, [(k, element) for _, k, element in picks]),
                              RELABEL_WEIGHT * sum(cost for cost, _, _ in picks)))
    faint = sorted((atom.confidence, k) for k, atom in enumerate(seen.atoms)
                   if atom.element == "H" and atom.confidence < WEAK_H)[:WEAK_H_POOL]
    drops = {k: confidence for confidence, k in faint}
    for k in _overfull_hydrogens(seen) + (_overfull_terminals(seen) if OVERFULL_TERMINALS else []):
        drops.setdefault(k, seen.atoms[k].confidence)
    return bases + [(_without(seen, set(gone)), WEAK_H_DROP * sum(drops[k] for k in gone))
                    for size in range(1, DROPS_AT_ONCE + 1) for gone in combinations(drops, size)] + _rehomed(seen)


HYDROXY_HALOGEN = 1.0  # what reading an F drawn with an H as O costs (None: never)


def _hydroxy_halogens(graph: MolGraph) -> list[int]:
    """The F drawn with an H and one heavy neighbour: an OH drawn in fluorine's colour (O and F are the elements a
    model confuses most), which as drawn is no molecule; read as O (at ``HYDROXY_HALOGEN``) it is the OH. Not a
    heavier halogen: an H drawn beside a Br or Cl is more often spurious (``WEAK_H`` may leave it out)."""
    heavy, hydrogen = _bond_counts(graph)
    return [k for k, atom in enumerate(graph.atoms) if atom.element == "F" and hydrogen[k] >= 1 and heavy[k] == 1]


REHOME_COST = 1.0  # what moving an H drawn on an overfull O or N to the nearest other O or N costs (None: never)
REHOME_REACH = 2.2  # Å: how far from the H that other atom may be
OH_LENGTH = 0.97  # Å: where on the line to its new atom the H is put


def _rehomed(seen: MolGraph) -> list[tuple[MolGraph, float]]:
    """Variants with an H drawn on an O or N that it overfills (an O with two H and a heavy neighbour) moved to
    an O or N with room within ``REHOME_REACH`` (of its H and such atoms, the pair nearest each other; at
    ``REHOME_COST``, ``OH_LENGTH`` from its new atom): the H of an intramolecular H-bond drawn on the wrong end,
    as a salicylic acid's phenol H drawn on the acid's OH, which read as drawn separates charges
    (``C([OH2+])...[O-]``)."""
    if REHOME_COST is None:
        return []
    heavy, hydrogen = _bond_counts(seen)
    xy, neighbours = seen.positions, seen.neighbours
    roomy = [k for k, atom in enumerate(seen.atoms) if atom.element in OVERFULL_ELEMENTS
             and heavy[k] + hydrogen[k] < VALENCE[atom.element]]
    out = []
    for a, atom in enumerate(seen.atoms):
        if atom.element not in OVERFULL_ELEMENTS or heavy[a] + hydrogen[a] <= VALENCE[atom.element]:
            continue
        moves = [(float(np.hypot(*(xy[k] - xy[h]))), h, k) for h in neighbours[a] if seen.atoms[h].element == "H"
                 for k in roomy]
        moves = [move for move in moves if move[0] <= REHOME_REACH]
        if not moves:
            continue
        d, h, k = min(moves)
        place = xy[k] + OH_LENGTH * (xy[h] - xy[k]) / max(d, 1e-6)
        atoms = list(seen.atoms)
        atoms[h] = replace(atoms[h], x=float(place[0]), y=float(place[1]))
        bonds = [(k, h) if set(b) == {a, h} else b for b in seen.bonds]
        out.append((MolGraph(atoms, bonds, list(seen.bond_confidence)), REHOME_COST))
    return out


SP_CHAIN_COST = 1.0  # what rebuilding an alkyne the depiction drew short costs (None: never)
SP_SINGLE = 1.42  # Å: an alkyne's C-C
SP_ALIGN = 0.9  # cosine: how straight on from an atom's bonds the chain must leave it


def _sp_chains(seen: MolGraph) -> list[tuple[MolGraph, float]]:
    """Variants with an alkyne rebuilt where the depiction drew it short, at ``SP_CHAIN_COST``. The two sp
    carbons of a C#C, 1.2 Å apart, often merge into one ball: an atom with no heavy neighbour about 2.0-2.8 Å
    from an atom with room for a bond is a terminal alkyne's CH missing its other carbon (one C is put in
    between, 1.42 Å from the atom); an atom with no heavy neighbour midway between two such atoms 3.6-4.6 Å
    apart, on their line, is a diarylacetylene's two carbons drawn as one (it becomes both)."""
    if SP_CHAIN_COST is None:
        return []
    heavy, hydrogen = _bond_counts(seen)
    xy, neighbours = seen.positions, seen.neighbours
    atoms = [k for k, a in enumerate(seen.atoms) if a.element != "H"]
    room = [k for k in atoms if heavy[k] + hydrogen[k] < VALENCE[seen.atoms[k].element]]
    loose = [k for k in room if heavy[k] == 0]

    def clear(point, skip):  # no heavy atom of the graph near a new atom's place
        return all(np.hypot(*(xy[k] - point)) > 0.9 for k in atoms if k not in skip)

    def outward(a, towards):  # the line a->towards leaves a opposite its bonds, as an sp chain does
        units = [(xy[k] - xy[a]) / np.hypot(*(xy[k] - xy[a])) for k in neighbours[a] if seen.atoms[k].element != "H"]
        if not units:
            return True
        away, line = -np.sum(units, axis=0), towards - xy[a]
        return float(np.dot(away, line)) >= SP_ALIGN * np.hypot(*away) * np.hypot(*line)

    def built(new_atoms, bonds, gone=()):
        graph = MolGraph(seen.atoms + new_atoms, seen.bonds + bonds,
                         seen.bond_confidence + [0.5] * len(bonds) if seen.bond_confidence else [])
        return _without(graph, set(gone)), SP_CHAIN_COST

    variants = []
    for x in loose:
        reach = {a: float(np.hypot(*(xy[x] - xy[a]))) for a in room if a != x}
        for a, d in reach.items():
            if 2.0 <= d <= 2.8 and outward(a, xy[x]):
                point = xy[a] + (xy[x] - xy[a]) * SP_SINGLE / d
                if clear(point, {a, x}):
                    variants.append(built([GraphAtom("C", *point, seen.atoms[x].confidence / 2)],
                                          [(a, len(seen.atoms)), (len(seen.atoms), x)]))
        for a, b in combinations([k for k, d in reach.items() if 1.2 <= d <= 2.9], 2):  # x midway: 1.8-2.3 Å each
            d = float(np.hypot(*(xy[b] - xy[a])))
            middle = (xy[a] + xy[b]) / 2
            if 3.6 <= d <= 4.6 and np.hypot(*(xy[x] - middle)) < 0.6 and outward(a, xy[b]) and outward(b, xy[a]):
                ends = [xy[a] + (xy[b] - xy[a]) * f for f in (SP_SINGLE / d, 1 - SP_SINGLE / d)]
                if all(clear(p, {a, b, x}) for p in ends):
                    n = len(seen.atoms)
                    variants.append(built([GraphAtom("C", *p, seen.atoms[x].confidence) for p in ends],
                                          [(a, n), (n, n + 1), (n + 1, b)], gone={x, *neighbours[x]}))
    return variants


def _relabelled(graph: MolGraph, picks: list[tuple[int, str]]) -> MolGraph:
    """``graph`` with each atom ``k`` of ``picks`` read as ``element`` (and no alternatives left)."""
    atoms = list(graph.atoms)
    for k, element in picks:
        atoms[k] = replace(atoms[k], element=element, alternatives=())
    return MolGraph(atoms, list(graph.bonds), list(graph.bond_confidence))


OVERFULL_ELEMENTS = ("O", "N")  # an H seen on one of these whose heavy neighbours fill its valence may be left out


def _overfull_hydrogens(graph: MolGraph) -> list[int]:
    """The seen H bonded to an O or N (``OVERFULL_ELEMENTS``) whose heavy neighbours alone already fill its
    valence: an H drawn on a ring O or on an N with three heavy neighbours, which no neutral molecule has
    (a model draws one there, where the atom's lone pair bulges). An H on a halogen is left to ``WEAK_H``:
    there the element is more often what is wrong (an OH read as F)."""
    heavy, _ = _bond_counts(graph)
    partner = {}
    for i, j in graph.bonds:
        for a, b in ((i, j), (j, i)):
            if graph.atoms[b].element == "H":
                partner.setdefault(b, a)
    return [h for h, a in partner.items() if graph.atoms[a].element in OVERFULL_ELEMENTS
            and heavy[a] >= VALENCE[graph.atoms[a].element]]


OVERFULL_TERMINALS = True  # ... and so may a heavy atom with that one bond (False: never)
DROPS_AT_ONCE = 2  # how many of the atoms that may be left out are left out together at most


def _overfull_terminals(graph: MolGraph) -> list[int]:
    """The heavy atoms whose one bond is to an O or N (``OVERFULL_ELEMENTS``) that its other heavy neighbours
    already fill: an O or F drawn on an oxadiazole's or an anhydride's ring O (read, it would make an oxonium
    oxide, ``[o+][O-]``, of which the catalogue has none). An N-oxide's or a nitro group's O, on an N with room
    for it, is no such atom."""
    heavy, hydrogen = _bond_counts(graph)
    return [b for i, j in graph.bonds for a, b in ((i, j), (j, i))
            if graph.atoms[b].element != "H" and heavy[b] + hydrogen[b] == 1
            and graph.atoms[a].element in OVERFULL_ELEMENTS and heavy[a] - 1 >= VALENCE[graph.atoms[a].element]]


def _bond_counts(graph: MolGraph) -> tuple[np.ndarray, np.ndarray]:
    """Per atom, how many heavy atoms and how many H it is bonded to."""
    neighbours = graph.neighbours
    hydrogen = np.array([sum(graph.atoms[k].element == "H" for k in around) for around in neighbours], int)
    return np.array([len(around) for around in neighbours], int) - hydrogen, hydrogen


H_DROP = 2.0  # a known formula's hydrogens: what leaving out a seen H costs, times its confidence
H_MISMATCH = 3.0  # ... and what each H more or fewer than the formula's costs
H_DROP_EXTRA = 2  # ... leaving out up to this many more than the surplus


def _without(graph: MolGraph, gone: set[int]) -> MolGraph:
    """``graph`` without the atoms ``gone`` and their bonds."""
    if not gone:
        return graph
    index, atoms = {}, []
    for k, atom in enumerate(graph.atoms):
        if k not in gone:
            index[k] = len(atoms)
            atoms.append(atom)
    kept = [(b, (i, j)) for b, (i, j) in enumerate(graph.bonds) if i not in gone and j not in gone]
    return MolGraph(atoms, [(index[i], index[j]) for _, (i, j) in kept],
                    [graph.bond_confidence[b] for b, _ in kept] if graph.bond_confidence else [])


def _cheapest_valid(bases: list[tuple[MolGraph, float]], hydrogens: int | None, *, guess_nitrogen: bool) -> MolGraph:
    """Of every seen graph in ``bases`` (with its cost) and its hidden-hydrogen variants, the cheapest that
    chemistry reads as one valid molecule (:func:`with_hidden_hydrogens`); with none, the first base's guess.
    Where the cheapest reading charges an atom, its base is tried once more with one or two of those atoms
    read as the neutral element with their electrons (``ISOELECTRONIC``: an O+ is drawn like an N, an
    O- like an F ...), at ``ISOELECTRONIC_COST`` each: a nitrile's N drawn in oxygen's colour is read as
    that N, not as an oxonium cation. With ``guess_nitrogen``, where the cheapest reading costs more than
    ``NITROGEN_GUESS``, one carbon drawn without H (:func:`_bare_carbons`) may be read as N at that cost: an
    imide's or a pyridine's N drawn wholly in carbon's colour, which as C needs an H nobody saw. That carbon
    is looked for in the seen graph, in the cheapest reading's base and in its isoelectronic relabelling (a
    cyanopyridine with both Ns misdrawn needs both levers)."""
    best = first = _cheapest_reading(bases, hydrogens)
    if best is not None and ISOELECTRONIC_COST is not None:
        _cost, (seen, base_cost), _graph, mol = best
        charged = [(k, ISOELECTRONIC[(seen.atoms[k].element, a.GetFormalCharge())])
                   for k, a in enumerate(mol.GetAtoms()) if k < len(seen.atoms)
                   and (seen.atoms[k].element, a.GetFormalCharge()) in ISOELECTRONIC]
        best = _cheaper(best, [(_relabelled(seen, list(picks)), base_cost + ISOELECTRONIC_COST * size)
                               for size in (1, 2) for picks in combinations(charged, size)], hydrogens)
    if guess_nitrogen and NITROGEN_GUESS is not None and best is not None and best[0] > NITROGEN_GUESS:
        tried = {id(base): base for base in (bases[0], first[1], best[1])}.values()
        best = _cheaper(best, [(_relabelled(seen, [(k, "N")]), base_cost + NITROGEN_GUESS)
                               for seen, base_cost in tried for k in _bare_carbons(seen)], hydrogens)
    if best is None:
        options, guess = _guess(bases[0][0])
        return _add_hydrogens(bases[0][0], [options[k] for k in sorted(guess)])
    _cost, _base, graph, mol = best
    graph.smiles = Chem.MolToSmiles(Chem.RemoveHs(mol))
    graph.bond_orders = [mol.GetBondBetweenAtoms(i, j).GetBondTypeAsDouble() for i, j in graph.bonds]
    return graph


def _cheaper(best: tuple, variants: list[tuple[MolGraph, float]], hydrogens: int | None) -> tuple:
    """The cheapest valid reading of ``variants`` where it is cheaper than ``best``; else ``best``."""
    other = _cheapest_reading(variants, hydrogens) if variants else None
    return other if other is not None and other[0] < best[0] else best


# (element, formal charge) in a reading -> the neutral element with the same electrons: what it was misread from
ISOELECTRONIC = {("O", 1): "N", ("N", 1): "C", ("O", -1): "F", ("N", -1): "O"}
ISOELECTRONIC_COST = 2.0  # what reading a charged atom as that element costs (None: never)


NITROGEN_GUESS = 2.5  # what reading a carbon without H as an N costs, where every reading costs more (None: never)
NITROGEN_IN_RING = True  # ... only a carbon on a ring of the graph (False: any)


def _bare_carbons(graph: MolGraph) -> list[int]:
    """The carbons with two or three heavy neighbours and no H, on a ring of the graph (``NITROGEN_IN_RING``):
    where an N drawn in carbon's colour (a pyridine's, an imide's) would leave a carbon that needs an H nobody
    saw. Not a chain's carbon: a nitrile's C read as N makes a nitroso compound."""
    heavy, hydrogen = _bond_counts(graph)
    found = [k for k, atom in enumerate(graph.atoms) if atom.element == "C" and hydrogen[k] == 0 and heavy[k] in (2, 3)]
    if not NITROGEN_IN_RING:
        return found
    skeleton = [[n for n in around if graph.atoms[n].element != "H"] for around in graph.neighbours]
    return [k for k in found if _in_ring(skeleton, k)]


def _in_ring(skeleton: list[list[int]], k: int) -> bool:
    """Whether atom ``k`` lies on a ring of ``skeleton`` (each heavy atom's heavy neighbours): two of its
    neighbours joined without it."""
    if len(skeleton[k]) < 2:
        return False
    first, *others = skeleton[k]
    reached, todo = {k, first}, [first]
    while todo:
        for n in skeleton[todo.pop()]:
            if n not in reached:
                reached.add(n)
                todo.append(n)
    return any(n in reached for n in others)


def _guess(seen: MolGraph) -> tuple[list[_HiddenHydrogen], frozenset[int]]:
    """``seen``'s hidden-hydrogen options and the geometry's guess (the options with positive evidence)."""
    options = _hidden_hydrogen_options(seen)
    return options, frozenset(k for k, o in enumerate(options) if o.evidence > 0)


def _cheapest_reading(bases: list[tuple[MolGraph, float]], hydrogens: int | None):
    """(cost, its base (seen graph, cost), graph, RDKit molecule) of the cheapest valid reading of ``bases``, or
    None."""
    readings, guesses = [], []
    for n, (seen, base_cost) in enumerate(bases):
        options, guess = _guess(seen)
        guesses.append((seen, options))
        pool = sorted(range(len(options)), key=lambda k: abs(options[k].evidence))[:FLIP_POOL]
        variants = {guess: 0.0}
        for size in (1, 2):
            for flips in combinations(pool, size):
                variants.setdefault(guess ^ frozenset(flips), sum(abs(options[k].evidence) for k in flips))
        seen_h = sum(a.element == "H" for a in seen.atoms)
        for chosen, cost in variants.items():
            mismatch = 0.0 if hydrogens is None else H_MISMATCH * abs(seen_h + len(chosen) - hydrogens)
            for charge in (0, 1):
                readings.append((base_cost + cost + mismatch + ION_COST * charge, n, charge, sorted(chosen)))
    readings.sort(key=lambda t: (t[0], t[1]))
    best = None
    for cost, n, charge, chosen in readings:
        if best is not None and cost >= best[0]:
            break
        seen, options = guesses[n]
        graph = _add_hydrogens(seen, [options[k] for k in chosen])
        mol = _perceive(graph, charge)
        if mol is not None:
            cost += SEPARATION_COST * _separated_pairs(mol, charge) + CUMULENE_COST * _cumulated_centres(mol)
            if best is None or cost < best[0]:
                best = (cost, bases[n], graph, mol)
    return best


CUMULENE_COST = 2.0  # ... and each atom with two double bonds (an allene's, a ketenimine's: none in the catalogue)


def _cumulated_centres(mol: Chem.Mol) -> int:
    """How many atoms of ``mol`` carry two double bonds (C=C=C, N=C=C, O=C=N ...)."""
    return sum(sum(b.GetBondType() == Chem.BondType.DOUBLE for b in a.GetBonds()) >= 2 for a in mol.GetAtoms())


def _separated_pairs(mol: Chem.Mol, charge: int) -> int:
    """How many pairs of opposite formal charges a reading of net ``charge`` separates (a nitro group: 1)."""
    return (sum(abs(a.GetFormalCharge()) for a in mol.GetAtoms()) - abs(charge)) // 2


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


# an element perceived as the lighter one of its group where its neighbours leave it that one's valence (empty: never)
PERCEIVE_LIGHTER = {"S": "O", "P": "N"}


def _perceive(graph: MolGraph, charge: int) -> Chem.Mol | None:
    """The graph as a sanitised RDKit molecule of net ``charge``, or None when it is not valid.

    RDKit's perception tries the valences of an element in a fixed order and keeps the first assignment it
    finds valid: sulfur's 6 and 3 before its 2, phosphorus's 5 before its 3. So a thiophene amide may come
    out as ``C([O-])=C1[S+]=CC=C1`` (or not, depending on the order of the atoms). An S or P whose neighbours
    leave it the valence of the lighter element of its group (``PERCEIVE_LIGHTER``: O's 2, N's 3) is
    perceived as that element too (then put back) where the first reading separates charges, and of the two
    the assignment with fewer charges is kept."""
    mol = _perceive_in(graph, charge)
    if mol is not None and _separated_pairs(mol, charge) and any(a.element in PERCEIVE_LIGHTER
                                                                 for a in graph.atoms):
        lighter = _perceive_in(graph, charge, lighter=True)
        if lighter is not None and _separated_pairs(lighter, charge) < _separated_pairs(mol, charge):
            mol = lighter
    return mol


def _perceive_in(graph: MolGraph, charge: int, lighter: bool = False) -> Chem.Mol | None:
    """:func:`_perceive`, with ``lighter`` each S or P that may be as the lighter element of
    ``PERCEIVE_LIGHTER`` given to RDKit as that element; the molecule returned has the graph's own."""
    degree = sum(_bond_counts(graph)) if lighter else None
    mol = Chem.RWMol()
    conformer = Chem.Conformer(len(graph.atoms))
    swapped = []
    for k, atom in enumerate(graph.atoms):
        element = atom.element
        if lighter and element in PERCEIVE_LIGHTER and degree[k] <= VALENCE[PERCEIVE_LIGHTER[element]]:
            element = PERCEIVE_LIGHTER[element]
            swapped.append((k, atom.element))
        mol.AddAtom(Chem.Atom(element))
        conformer.SetAtomPosition(k, Point3D(atom.x, atom.y, 0.0))
    for i, j in graph.bonds:
        mol.AddBond(i, j, Chem.BondType.SINGLE)
    mol.AddConformer(conformer, assignId=True)
    try:
        rdDetermineBonds.DetermineBondOrders(mol, charge=charge, embedChiral=False, maxIterations=10000)
        for k, element in swapped:
            mol.GetAtomWithIdx(k).SetAtomicNum(Chem.GetPeriodicTable().GetAtomicNumber(element))
        Chem.SanitizeMol(mol)
    except Exception:  # RDKit raises several types for graphs that are not molecules
        return None
    valid = len(Chem.GetMolFrags(mol)) == 1 and all(
        a.GetNumRadicalElectrons() == 0
        and (a.GetFormalCharge() == 0 or (a.GetSymbol() in CHARGEABLE
                                          and (charge == 0 or a.GetTotalNumHs(includeNeighbors=True) == 0)))
        for a in mol.GetAtoms())
    return mol if valid else None
