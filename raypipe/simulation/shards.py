"""Training shards: building them (conformer, filters, simulation, depiction) into rows of the shard
schema (:mod:`raypipe.simulation.schema`, plain or compact).

Rejected molecules go to a second table (``molecule_id``, ``smiles``, ``reason``).
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.chem.depiction import encode_png, render_depiction
from raypipe.chem.elements import ball_radius
from raypipe.chem.molecule import Molecule
from raypipe.errors import MoleculeError
from raypipe.simulation.params import ParameterSpec, parameter_sets
from raypipe.simulation.schema import REJECT_SCHEMA, compact_stacks, shard_schema
from raypipe.simulation.ppm import Simulator
from raypipe.window import Window

MAX_CORRUGATION = 1.8

def split_of(smiles: str) -> str:
    """train/val/test (80/10/10) from a hash of the canonical SMILES: one split per molecule."""
    u = int.from_bytes(hashlib.sha256(smiles.encode()).digest()[:8], "little") / 2**64
    return "train" if u < 0.8 else "val" if u < 0.9 else "test"


def prepare_molecule(molecule_id: str, smiles: str, seed: int, window: Window,
                     max_corrugation: float = MAX_CORRUGATION) -> Molecule:
    """Conformer and filters; raises MoleculeError with the reason a molecule is rejected."""
    molecule = Molecule.from_smiles(smiles, seed=seed, name=molecule_id)
    if molecule.corrugation > max_corrugation:
        raise MoleculeError(f"not quasi-planar: corrugation {molecule.corrugation:.2f} Å > {max_corrugation} Å")
    reach = np.abs(molecule.positions[:, :2]).max() + max(ball_radius(e) for e in molecule.elements)
    if reach > window.fov / 2:
        raise MoleculeError(f"too large: reaches {reach:.1f} Å from the centre, window half-width {window.fov / 2} Å")
    return molecule


def build_shard(molecules: list[tuple[str, str]], spec: ParameterSpec, seed: int, simulator: Simulator,
                max_corrugation: float = MAX_CORRUGATION, compact: bool = False) -> tuple[pa.Table, pa.Table]:
    """Simulate every accepted molecule under its parameter sets: (rows table, rejects table)."""
    rows, rejects = [], []
    for molecule_id, smiles in molecules:
        try:
            molecule = prepare_molecule(molecule_id, smiles, seed, simulator.settings.window, max_corrugation)
        except MoleculeError as exc:
            rejects.append({"molecule_id": molecule_id, "smiles": smiles, "reason": str(exc)})
            continue
        rows += molecule_rows(molecule, molecule_id, spec, seed, simulator)
    return rows_to_table(rows, simulator, compact), pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA)


def molecule_rows(molecule: Molecule, molecule_id: str, spec: ParameterSpec, seed: int,
                  simulator: Simulator) -> list[dict]:
    """The shard rows of one prepared molecule: one per parameter set (no RDKit needed here)."""
    target = encode_png(render_depiction(molecule, simulator.settings.window))
    atoms = [{"element": e, "x": x, "y": y, "z": z, "charge": q}
             for e, (x, y, z), q in zip(molecule.elements, molecule.positions.tolist(), molecule.charges.tolist())]
    bonds = [{"i": i, "j": j, "order": o} for i, j, o in molecule.bonds]
    sets = parameter_sets(spec, molecule_id, seed)
    rows = []
    for stack in simulator.simulate(molecule, sets, distance_offsets(molecule_id, seed, len(sets), simulator)):
        rows.append({
            "molecule_id": molecule_id, "smiles": molecule.smiles, "formula": molecule.formula,
            "corrugation": molecule.corrugation, "split": split_of(molecule.smiles),
            "amplitude": stack.metadata["amplitude"], "stiffness": stack.metadata["stiffness"],
            "distance": stack.metadata["distance"], "fov": simulator.settings.window.fov,
            "stack": stack.images.astype(np.float16), "target_png": target, "atoms": atoms, "bonds": bonds,
        })
    return rows


def distance_offsets(molecule_id: str, seed: int, n: int, simulator: Simulator) -> list[int]:
    """Per-stack closest-height offsets (in ``Z_STEP`` steps), deterministic in seed and molecule id."""
    steps = simulator.settings.jitter_steps
    if steps == 0:
        return [0] * n
    digest = hashlib.sha256(f"{seed}:{molecule_id}:distance".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little")).integers(-steps, steps + 1, n).tolist()


def rows_to_table(rows: list[dict], simulator: Simulator, compact: bool = False) -> pa.Table:
    s = simulator.settings
    schema = shard_schema(s.n_images, s.window.size, compact)
    shape = (s.n_images, s.window.size, s.window.size)
    stacks = np.stack([r["stack"] for r in rows]) if rows else np.zeros((0, *shape), np.float16)
    if compact:
        u8, lo, hi = compact_stacks(stacks)
        stack_arrays = {"stack_u8": _tensor(schema, "stack_u8", u8, pa.uint8()),
                        "stack_lo": pa.FixedSizeListArray.from_arrays(pa.array(lo.ravel(), pa.float32()), s.n_images),
                        "stack_hi": pa.FixedSizeListArray.from_arrays(pa.array(hi.ravel(), pa.float32()), s.n_images)}
    else:
        stack_arrays = {"stack": _tensor(schema, "stack", stacks, pa.float16())}
    arrays = [stack_arrays[name] if name in stack_arrays
              else pa.array([r[name] for r in rows], type=schema.field(name).type) for name in schema.names]
    return pa.Table.from_arrays(arrays, schema=schema)


def _tensor(schema: pa.Schema, name: str, values: np.ndarray, dtype: pa.DataType) -> pa.Array:
    tensor = schema.field(name).type
    storage = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel(), dtype), int(np.prod(tensor.shape)))
    return pa.ExtensionArray.from_storage(tensor, storage)


def table_bytes(table: pa.Table) -> bytes:
    """A table as Parquet bytes (zstd), ready for an atomic write."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()
