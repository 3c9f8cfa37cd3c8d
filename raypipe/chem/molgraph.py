"""Molecular graphs as seen from the tip: atoms with 2D positions (Å) and bonds. What scoring, evaluation
and reports need; no RDKit, no pixels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from raypipe.chem.elements import COVALENT_RADII
from raypipe.chem.molecule import hill_formula

if TYPE_CHECKING:
    from raypipe.chem.molecule import Molecule


@dataclass(frozen=True)
class GraphAtom:
    element: str
    x: float  # Å, window coordinates
    y: float
    confidence: float = 1.0
    # other elements the depiction's colours allow here, each with what taking it costs (nats, cheapest
    # first): what chemistry may relabel the atom to (raypipe.chem.hydrogens); empty where nothing may
    alternatives: tuple[tuple[str, float], ...] = ()


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
    def neighbours(self) -> list[list[int]]:
        """Per atom, the atoms bonded to it."""
        out: list[list[int]] = [[] for _ in self.atoms]
        for i, j in self.bonds:
            out[i].append(j)
            out[j].append(i)
        return out

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


def ideal_length(atoms: list[GraphAtom], i: int, j: int) -> float:
    """Ideal bond length (Å) between atoms i and j: the sum of their covalent radii."""
    return COVALENT_RADII[atoms[i].element] + COVALENT_RADII[atoms[j].element]
