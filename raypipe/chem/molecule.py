"""3D molecules for simulation and depiction, built with RDKit and laid flat under the tip.

RDKit is needed to *build* a molecule (from SMILES or a file); a built molecule is plain data
(:meth:`Molecule.to_record` / :meth:`Molecule.from_record`), so simulation and depiction also run where
RDKit is not installed (a lent GPU machine) on molecules prepared elsewhere.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from raypipe.chem.elements import ELEMENTS
from raypipe.errors import MoleculeError

if TYPE_CHECKING:
    from rdkit import Chem


def _rdkit():
    """RDKit's modules, imported on first use (its log silenced)."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem, rdDetermineBonds

    RDLogger.DisableLog("rdApp.*")
    return Chem, AllChem, rdDetermineBonds


def canonical_smiles(smiles: str) -> str | None:
    """RDKit's canonical SMILES of ``smiles`` without stereochemistry, as a reading writes its ``smiles`` (a
    top view sees no stereo); None where RDKit cannot read it.

    Examples:
        >>> canonical_smiles("C1=CC=CC=C1O")
        'Oc1ccccc1'
        >>> canonical_smiles("F/C=C/F")
        'FC=CF'
    """
    Chem = _rdkit()[0]
    mol = Chem.MolFromSmiles(smiles)
    return None if mol is None else Chem.MolToSmiles(mol, isomericSmiles=False)


def hill_formula(elements: list[str]) -> str:
    """Hill-order formula (C, H, then alphabetical) of a list of element symbols."""
    counts = Counter(elements)
    first = ["C", "H"] if "C" in counts else []
    order = first + sorted(e for e in counts if e not in first)
    return "".join(f"{e}{counts[e] if counts[e] > 1 else ''}" for e in order)


@dataclass(frozen=True)
class Molecule:
    """A molecule with explicit hydrogens and 3D coordinates in Å, oriented for a top view.

    Orientation: the best-fit plane of all atoms (least-variance principal axis) is normal to z, with
    the side holding the atoms farthest from the plane facing the tip (+z, as bulky groups point away
    from the surface); the longest in-plane axis along x; the top atom at z = 0; the x-y bounding box
    centred on the origin. ``corrugation`` is the height spread of all atoms, hydrogens included
    (max z - min z, Å): what the tip sees.
    """

    elements: tuple[str, ...]
    positions: np.ndarray  # (N, 3) float64, Å
    charges: np.ndarray  # (N,) MMFF94 partial charges (Gasteiger when MMFF has no parameters)
    bonds: tuple[tuple[int, int, float], ...]  # (i, j, order); aromatic = 1.5
    smiles: str
    name: str = ""

    # --- constructors -------------------------------------------------------------------------
    @classmethod
    def from_smiles(cls, smiles: str, seed: int = 0, name: str = "") -> "Molecule":
        """Embed a SMILES with RDKit ETKDG (``seed``) and relax it with MMFF94, oriented for a top view.

        Returns the :class:`Molecule` (explicit hydrogens, positions in Å, MMFF94 charges, bond orders).
        Raises :class:`raypipe.MoleculeError` for an unparsable SMILES, several fragments, an element
        outside H C N O F S P Cl Br I, or a molecule RDKit cannot embed."""
        Chem, AllChem, _ = _rdkit()
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise MoleculeError(f"RDKit cannot parse SMILES {smiles!r}")
        _check(mol, smiles)
        mol = Chem.AddHs(mol)
        params = AllChem.ETKDGv3()
        params.randomSeed = seed
        if AllChem.EmbedMolecule(mol, params) != 0:
            params.useRandomCoords = True
            if AllChem.EmbedMolecule(mol, params) != 0:
                raise MoleculeError(f"RDKit could not embed {smiles!r} in 3D")
        if AllChem.MMFFHasAllMoleculeParams(mol):
            AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
        return cls.from_rdkit(mol, name=name)

    @classmethod
    def from_file(cls, path: str | Path) -> "Molecule":
        """Read an XYZ (bonds perceived by RDKit), SDF or MOL file (its first record, with 3D coordinates).

        Raises :class:`raypipe.MoleculeError` naming the file for a missing or unreadable file, an unknown
        suffix, a molecule without 3D coordinates, bonds that cannot be perceived, or what
        :meth:`from_smiles` refuses."""
        Chem, _, rdDetermineBonds = _rdkit()
        path = Path(path)
        if not path.is_file():
            raise MoleculeError(f"{path}: no such file")
        suffix = path.suffix.lower()
        if suffix == ".xyz":
            mol = Chem.MolFromXYZFile(str(path))
            if mol is None:
                raise MoleculeError(f"{path}: not a readable XYZ file")
            try:
                rdDetermineBonds.DetermineBonds(mol, charge=0)
            except ValueError as exc:
                raise MoleculeError(f"{path}: cannot perceive bonds ({exc})") from exc
        elif suffix in (".sdf", ".mol"):
            mol = next(iter(Chem.SDMolSupplier(str(path), removeHs=False)), None)
            if mol is None:
                raise MoleculeError(f"{path}: not a readable {suffix[1:].upper()} file")
            if mol.GetNumConformers() == 0 or not mol.GetConformer().Is3D():
                raise MoleculeError(f"{path}: the molecule has no 3D coordinates")
        else:
            raise MoleculeError(f"{path}: unknown molecule format {suffix!r} (use .xyz, .sdf or .mol)")
        _check(mol, str(path))
        return cls.from_rdkit(Chem.AddHs(mol, addCoords=True), name=path.stem)

    @classmethod
    def from_rdkit(cls, mol: Chem.Mol, name: str = "") -> "Molecule":
        """Wrap an RDKit molecule that has explicit hydrogens and a 3D conformer."""
        Chem, _, _ = _rdkit()
        elements = tuple(a.GetSymbol() for a in mol.GetAtoms())
        positions = _orient(mol.GetConformer().GetPositions())
        bonds = tuple(
            (b.GetBeginAtomIdx(), b.GetEndAtomIdx(), float(b.GetBondTypeAsDouble())) for b in mol.GetBonds()
        )
        smiles = Chem.MolToSmiles(Chem.RemoveHs(mol))
        return cls(elements, positions, _charges(mol), bonds, smiles, name)

    # --- properties ---------------------------------------------------------------------------
    @property
    def corrugation(self) -> float:
        """Height spread of all atoms in Å (max z - min z)."""
        return float(np.ptp(self.positions[:, 2]))

    @property
    def formula(self) -> str:
        return hill_formula(list(self.elements))

    def to_record(self) -> dict:
        """The molecule as plain JSON-able data (elements, positions, charges, bonds, smiles, name)."""
        return {"elements": list(self.elements), "positions": np.round(self.positions, 5).tolist(),
                "charges": np.round(self.charges, 5).tolist(), "bonds": [list(b) for b in self.bonds],
                "smiles": self.smiles, "name": self.name}

    @classmethod
    def from_record(cls, record: dict) -> "Molecule":
        """A molecule from :meth:`to_record`'s data (no RDKit needed)."""
        return cls(tuple(record["elements"]), np.asarray(record["positions"], dtype=np.float64),
                   np.asarray(record["charges"], dtype=np.float64),
                   tuple((int(i), int(j), float(o)) for i, j, o in record["bonds"]), record["smiles"],
                   record.get("name", ""))

    def to_xyz(self) -> str:
        """The molecule as XYZ text (name on the comment line)."""
        lines = [str(len(self.elements)), self.name or self.smiles]
        lines += [f"{e} {x:.5f} {y:.5f} {z:.5f}" for e, (x, y, z) in zip(self.elements, self.positions)]
        return "\n".join(lines) + "\n"


def _check(mol: Chem.Mol, source: str) -> None:
    """Reject multi-fragment input and elements outside the QUAM-AFM set."""
    Chem, _, _ = _rdkit()
    if len(Chem.GetMolFrags(mol)) > 1:
        raise MoleculeError(f"{source}: several fragments (salt or mixture); give one molecule")
    bad = sorted({a.GetSymbol() for a in mol.GetAtoms()} - set(ELEMENTS))
    if bad:
        raise MoleculeError(f"{source}: element(s) {', '.join(bad)} not supported (only {' '.join(ELEMENTS)})")


def _orient(xyz: np.ndarray) -> np.ndarray:
    """Rotate to the best-fit plane, bulky side up, top atom at z = 0, x-y bounding box centred."""
    centred = xyz - xyz.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov(centred.T))  # ascending variance
    axes = vectors[:, ::-1]  # x: largest variance, z: plane normal
    p = centred @ axes
    if -p[:, 2].min() > p[:, 2].max():  # put the side reaching farthest from the plane up
        p[:, 2] *= -1
        p[:, 1] *= -1  # keep the frame right-handed
    if np.sum(p[:, 0] ** 3) < 0:  # fix the remaining in-plane sign: heavier tail to +x
        p[:, :2] *= -1
    lo, hi = p[:, :2].min(axis=0), p[:, :2].max(axis=0)
    p[:, :2] -= (lo + hi) / 2
    p[:, 2] -= p[:, 2].max()
    return p


def _charges(mol: Chem.Mol) -> np.ndarray:
    _, AllChem, _ = _rdkit()
    props = AllChem.MMFFGetMoleculeProperties(mol)
    if props is not None:
        return np.array([props.GetMMFFPartialCharge(i) for i in range(mol.GetNumAtoms())])
    AllChem.ComputeGasteigerCharges(mol)
    return np.nan_to_num(np.array([a.GetDoubleProp("_GasteigerCharge") for a in mol.GetAtoms()]))
