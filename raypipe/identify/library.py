"""A library of known molecules as a data set, for identification: "which known compound is this scan?".

Built once (:func:`raypipe.pipelines.library.build_library`, ``raypipe library build``) from a SMILES list
by a Ray Data job, resumable by shard like ``raypipe simulate``; read as a whole (:meth:`Library.open`) into a few numpy columns
that the first stage of identification (:mod:`raypipe.identify.search`) scores vectorised.

Layout under the library's URI (local or ``s3://``):

==========================  ==================================================================================
``library.json``            format, version and settings (the window, conformer seed, fingerprint); a build
                            into the same place with other settings is refused
``shards/shard-NNNNN.pq``   one row per molecule (below), written atomically; a re-run skips finished shards
``rejects/shard-NNNNN.pq``  input lines that could not be used, with the reason (never dropped silently)
``cache/<hash>.npz``        the molecules' simulations for the simulation match (with ``--simulate`` made by
                            the build, otherwise made on demand by identification and written back)
``manifest.json``           counts, written at the end
==========================  ==================================================================================

Row columns: ``id``, ``name``, ``smiles`` (canonical), ``formula`` (Hill, with H), ``n_H`` ... ``n_I`` (element
counts), ``heavy`` (heavy atoms), ``rings``, ``extent_x``/``extent_y`` (the flat footprint of the top view
along its long and short axes, Å, balls included), ``sd_x``/``sd_y`` (the atoms' spread along those axes, Å),
``corrugation`` (Å), ``fingerprint`` (a Morgan fingerprint of the heavy-atom graph with elements only: what a
reading's graph can be compared with), ``distances`` (the heavy atoms' projected pair distances, rotation
free: :func:`pair_distances`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from raypipe.chem.elements import ELEMENTS
from raypipe.storage import StorageOptions, exists, filesystem, join, redact
from raypipe.window import DEFAULT_WINDOW, Window

FORMAT, VERSION = "raypipe-library", 1
FP_BITS, FP_RADIUS = 1024, 2
DISTANCE_BINS = np.arange(0.5, 14.0, 0.5)  # Å: centres of the pair-distance histogram's Gaussian bins
PAIR_KINDS = 3  # carbon-carbon, carbon-other, other-other heavy-atom pairs
COUNTS = tuple(f"n_{e}" for e in ELEMENTS)
SCHEMA = pa.schema([
    ("id", pa.string()), ("name", pa.string()), ("smiles", pa.string()), ("formula", pa.string()),
    *[(c, pa.int16()) for c in COUNTS], ("heavy", pa.int16()), ("rings", pa.int16()),
    ("extent_x", pa.float32()), ("extent_y", pa.float32()), ("sd_x", pa.float32()), ("sd_y", pa.float32()),
    ("corrugation", pa.float32()), ("fingerprint", pa.binary(FP_BITS // 8)),
    ("distances", pa.list_(pa.float32(), PAIR_KINDS * len(DISTANCE_BINS))),
])
REJECTS = pa.schema([("id", pa.string()), ("smiles", pa.string()), ("reason", pa.string())])


def skeleton_fingerprint(elements: list[str], edges: list[tuple[int, int]]) -> np.ndarray:
    """(FP_BITS,) uint8 Morgan fingerprint (radius ``FP_RADIUS``) of the heavy-atom graph: atoms told apart by
    element only, every bond alike (a reading's graph has no reliable hydrogens or bond orders).

    Examples:
        >>> a = skeleton_fingerprint(["C", "C", "O"], [(0, 1), (1, 2)])
        >>> b = skeleton_fingerprint(["C", "C", "N"], [(0, 1), (1, 2)])
        >>> a.shape, bool((a != b).any()), bool((a == skeleton_fingerprint(["C", "C", "O"], [(1, 0), (2, 1)])).all())
        ((1024,), True, True)
    """
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    heavy = [k for k, e in enumerate(elements) if e != "H"]
    index = {k: n for n, k in enumerate(heavy)}
    mol = Chem.RWMol()
    for k in heavy:
        mol.AddAtom(Chem.Atom(Chem.GetPeriodicTable().GetAtomicNumber(elements[k])))
    for i, j in edges:
        if i in index and j in index and i != j and mol.GetBondBetweenAtoms(index[i], index[j]) is None:
            mol.AddBond(index[i], index[j], Chem.BondType.SINGLE)
    mol = mol.GetMol()
    mol.UpdatePropertyCache(strict=False)
    Chem.FastFindRings(mol)
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=FP_RADIUS, fpSize=FP_BITS)
    return generator.GetFingerprintAsNumPy(mol, customAtomInvariants=[a.GetAtomicNum() for a in mol.GetAtoms()],
                                           customBondInvariants=[1] * mol.GetNumBonds()).astype(np.uint8)


def pair_distances(elements, xy: np.ndarray) -> np.ndarray:
    """The heavy atoms' layout seen from the tip, rotation free: histograms (Gaussian bins of 0.5 Å at
    ``DISTANCE_BINS``) of the projected distances between carbon-carbon, carbon-other and other-other heavy-atom
    pairs, concatenated and scaled to unit length. A reading with a few atoms misplaced or of the wrong
    element keeps most of it.

    Examples:
        >>> import numpy as np
        >>> h = pair_distances(["C", "C", "O", "H"], np.array([[0, 0], [1.4, 0], [2.8, 0], [0, 1]]))
        >>> h.shape, round(float(np.linalg.norm(h)), 6)
        ((81,), 1.0)
    """
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    heavy = [k for k, e in enumerate(elements) if e != "H"]
    out = np.zeros((PAIR_KINDS, len(DISTANCE_BINS)), np.float32)
    for n, i in enumerate(heavy):
        for j in heavy[n + 1:]:
            d = float(np.hypot(*(xy[i] - xy[j])))
            kind = (elements[i] != "C") + (elements[j] != "C")
            out[kind] += np.exp(-0.5 * ((DISTANCE_BINS - d) / 0.35) ** 2)
    flat = out.ravel()
    norm = float(np.linalg.norm(flat))
    return flat / norm if norm > 0 else flat


def skeleton_layout(distances: np.ndarray) -> np.ndarray:
    """(N, bins) pair-distance histograms with every heavy-atom pair alike, unit rows, from (N, PAIR_KINDS x
    bins) :func:`pair_distances` rows: a layout that forgives an element read wrong.

    Examples:
        >>> import numpy as np
        >>> co = pair_distances(["C", "O"], np.array([[0, 0], [1.2, 0]]))
        >>> cc = pair_distances(["C", "C"], np.array([[0, 0], [1.2, 0]]))
        >>> bool(np.allclose(skeleton_layout(co[None]), skeleton_layout(cc[None]))), float(co @ cc)
        (True, 0.0)
    """
    h = np.asarray(distances, np.float32).reshape(len(distances), PAIR_KINDS, -1).sum(axis=1)
    return h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-9)


def footprint(elements, positions: np.ndarray) -> tuple[float, float, float, float]:
    """(extent along x, extent along y, spread along x, spread along y) in Å of a molecule laid flat with its
    long axis along x (:class:`raypipe.Molecule`'s orientation): extents include the balls' radii, spreads
    are the atoms' standard deviations."""
    from raypipe.chem.elements import VDW_RADII

    xy = np.asarray(positions, np.float64)[:, :2]
    r = np.array([VDW_RADII[e] for e in elements])
    extent = (xy + r[:, None]).max(axis=0) - (xy - r[:, None]).min(axis=0)
    spread = xy.std(axis=0)
    return float(extent[0]), float(extent[1]), float(spread[0]), float(spread[1])


def molecule_row(molecule_id: str, smiles: str, seed: int = 0) -> dict:
    """One library row (module docs) of a SMILES; MoleculeError for one that cannot be used."""
    from rdkit.Chem import rdMolDescriptors

    from raypipe.chem.molecule import Molecule

    molecule = Molecule.from_smiles(smiles, seed=seed, name=molecule_id)
    from rdkit import Chem

    counts = {e: 0 for e in ELEMENTS}
    for e in molecule.elements:
        counts[e] += 1
    ex, ey, sx, sy = footprint(molecule.elements, molecule.positions)
    fp = skeleton_fingerprint(list(molecule.elements), [(i, j) for i, j, _ in molecule.bonds])
    return {"id": molecule_id, "name": molecule_id, "smiles": molecule.smiles, "formula": molecule.formula,
            **{f"n_{e}": counts[e] for e in ELEMENTS}, "heavy": sum(v for e, v in counts.items() if e != "H"),
            "rings": rdMolDescriptors.CalcNumRings(Chem.MolFromSmiles(molecule.smiles)),
            "extent_x": ex, "extent_y": ey, "sd_x": sx, "sd_y": sy, "corrugation": molecule.corrugation,
            "fingerprint": np.packbits(fp).tobytes(),
            "distances": pair_distances(molecule.elements, molecule.positions[:, :2]).tolist()}


def build_shard(pairs: list[tuple[str, str]], seed: int = 0, cache=None) -> tuple[pa.Table, pa.Table]:
    """(rows, rejects) of molecules; with ``cache`` (a :class:`raypipe.identify.candidates.CandidateCache`) each
    accepted molecule's depictions and simulations are made and written to it too."""
    from raypipe.errors import MoleculeError

    rows, rejects = [], []
    for molecule_id, smiles in pairs:
        try:
            row = molecule_row(molecule_id, smiles, seed)
            if cache is not None:
                candidate = cache.get(row["smiles"])
                if candidate is not None:
                    cache.simulations(candidate)
            rows.append(row)
        except (MoleculeError, ValueError, RuntimeError) as exc:
            rejects.append({"id": molecule_id, "smiles": smiles, "reason": str(exc)})
    return pa.Table.from_pylist(rows, schema=SCHEMA), pa.Table.from_pylist(rejects, schema=REJECTS)


def settings_of(window: Window, seed: int) -> dict:
    return {"format": FORMAT, "version": VERSION, "window": {"size": window.size, "fov": window.fov}, "seed": seed,
            "fingerprint": {"kind": "morgan-skeleton", "radius": FP_RADIUS, "bits": FP_BITS}}


@dataclass
class Library:
    """A library read for identification: its rows' columns as arrays (a 100,000-molecule library is ~20 MB)."""

    uri: str
    window: Window
    ids: np.ndarray  # (N,) object
    names: np.ndarray
    smiles: np.ndarray
    formulas: np.ndarray
    counts: np.ndarray  # (N, len(ELEMENTS)) int16, in ELEMENTS order
    rings: np.ndarray  # (N,) int16
    extent: np.ndarray  # (N, 2) float32
    spread: np.ndarray  # (N, 2) float32
    fingerprints: np.ndarray  # (N, FP_BITS // 64) uint64
    distances: np.ndarray  # (N, PAIR_KINDS x bins) float32, unit rows
    storage_options: StorageOptions = None
    _skeleton: np.ndarray | None = field(default=None, repr=False)
    _bits: np.ndarray | None = field(default=None, repr=False)

    @property
    def skeleton_layouts(self) -> np.ndarray:
        """(N, bins) float32: each molecule's layout with every heavy-atom pair alike (:func:`skeleton_layout`)."""
        if self._skeleton is None:
            self._skeleton = skeleton_layout(self.distances)
        return self._skeleton

    @property
    def fingerprint_bits(self) -> np.ndarray:
        """(N,) float32: how many bits each molecule's fingerprint sets."""
        if self._bits is None:
            self._bits = np.bitwise_count(self.fingerprints).sum(axis=1).astype(np.float32)
        return self._bits

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def heavy(self) -> np.ndarray:
        return self.counts[:, 1:].sum(axis=1)

    @property
    def cache_uri(self) -> str:
        return join(self.uri, "cache")

    @classmethod
    def open(cls, uri: str, storage_options: StorageOptions = None, window: Window | None = None) -> "Library":
        """Read the library at ``uri``. FileNotFoundError where there is none; ValueError where it was built
        for another window than ``window`` (the model's) or by a newer raypipe."""
        import pyarrow.parquet as pq

        fs, base = filesystem(uri, storage_options)
        path = join(base, "library.json")
        if not exists(fs, path):
            raise FileNotFoundError(f"{redact(uri)}: not a raypipe library (no library.json); build one with "
                                    "`raypipe library build MOLECULES --out URI`")
        settings = json.loads(fs.cat_file(path))
        if settings.get("format") != FORMAT or int(settings.get("version", 0)) > VERSION:
            raise ValueError(f"{redact(uri)}: a library of format {settings.get('format')} version "
                             f"{settings.get('version')}; this raypipe reads {FORMAT} version {VERSION}")
        own = Window(**settings["window"])
        if window is not None and (own.size, own.fov) != (window.size, window.fov):
            raise ValueError(f"{redact(uri)}: built for a {own.fov:g} Å / {own.size} px window, the model reads "
                             f"{window.fov:g} Å / {window.size} px; build the library for this model's window")
        paths = sorted(fs.glob(join(base, "shards", "shard-*.parquet")))
        tables = []
        for p in paths:
            with fs.open(p, "rb") as f:
                tables.append(pq.read_table(f))
        table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
        if table.num_rows == 0:
            raise ValueError(f"{redact(uri)}: the library holds no molecules")
        return cls._from_table(table, uri, own, storage_options)

    @classmethod
    def _from_table(cls, table: pa.Table, uri: str, window: Window, storage_options: StorageOptions = None):
        column = lambda name: table[name].to_numpy(zero_copy_only=False)  # noqa: E731
        fp = np.frombuffer(b"".join(table["fingerprint"].to_pylist()), np.uint64).reshape(table.num_rows, -1)
        return cls(uri, window, column("id"), column("name"), column("smiles"), column("formula"),
                   np.stack([column(c) for c in COUNTS], axis=1).astype(np.int16), column("rings").astype(np.int16),
                   np.stack([column("extent_x"), column("extent_y")], axis=1).astype(np.float32),
                   np.stack([column("sd_x"), column("sd_y")], axis=1).astype(np.float32), fp,
                   np.asarray(table["distances"].combine_chunks().flatten().to_numpy(), np.float32).reshape(
                       table.num_rows, -1), storage_options)

    @classmethod
    def from_smiles(cls, smiles: list[str], names: list[str] | None = None, window: Window | None = None,
                    uri: str = "") -> "Library":
        """A small library in memory (a ``--candidates`` list); unusable SMILES are left out."""
        pairs = [(names[k] if names else f"candidate-{k + 1}", s) for k, s in enumerate(smiles)]
        table, _ = build_shard(pairs)
        if table.num_rows == 0:
            raise ValueError("no usable candidate molecule (every SMILES was refused)")
        return cls._from_table(table, uri, window or DEFAULT_WINDOW)

    def summary(self) -> dict:
        return {"uri": redact(self.uri), "molecules": len(self), "window": asdict(self.window)}
