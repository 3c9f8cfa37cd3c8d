"""Simulation: ppafm stacks aligned with depictions, shards on Ray Data, local and on S3."""

from __future__ import annotations

import json
from pathlib import Path
import numpy as np
import pyarrow.parquet as pq
import pytest

from raypipe import Molecule, decode_png, extract_graph, list_archive, load_stack, render_depiction
from raypipe.chem.molecule import hill_formula
from raypipe.simulation.params import QUAM24, parameter_sets, parse_parameter_sets
from raypipe.simulation.shards import split_of

NAPHTHALENE = "c1ccc2ccccc2c1"
MOLECULES = [NAPHTHALENE, "Clc1cc(Cl)cc(Br)c1", "Cc1ccc(cc1)S(N)(=O)=O", "[Na+].[Cl-]"]


@pytest.fixture(scope="module")
def simulator():
    from raypipe.simulation.ppm import Simulator

    return Simulator()


def test_parameter_sets():
    assert len(parameter_sets("quam24", "m", 0)) == 24 == len(set(QUAM24))
    drawn = parameter_sets("random:3", "mol-1", seed=5)
    assert len(drawn) == 3 and set(drawn) <= set(QUAM24)
    assert drawn == parameter_sets("random:3", "mol-1", seed=5)
    assert any(parameter_sets("random:3", f"mol-{k}", seed=5) != drawn for k in range(2, 6))
    assert parse_parameter_sets("0.6,0.4;1.0,0.8") == [(0.6, 0.4), (1.0, 0.8)]
    with pytest.raises(ValueError, match="out of range"):
        parameter_sets([(3.0, 0.4)], "m", 0)


def test_split_is_per_molecule_and_roughly_80_10_10():
    splits = [split_of(f"C{'C' * k}O") for k in range(2000)]
    assert split_of("CCO") == split_of("CCO")
    assert 0.75 < splits.count("train") / 2000 < 0.85 and splits.count("test") > 120


@pytest.mark.slow
def test_simulated_stack_is_aligned_with_the_molecule(simulator):
    molecule = Molecule.from_smiles(NAPHTHALENE)
    stack, other = simulator.simulate(molecule, [(0.6, 0.4), (1.2, 0.8)])
    assert stack.images.shape == (10, 128, 128) and np.isfinite(stack.images).all()
    assert np.allclose(np.diff(stack.heights), 0.1)
    assert (other.metadata["amplitude"], other.metadata["stiffness"]) == (1.2, 0.8)
    assert not np.allclose(stack.images, other.images)  # one force field, two parameter sets
    # closest image: strongest repulsion; the molecule's long axis runs along x, as in its depiction
    assert stack.images[0].max() > stack.images[-1].max()
    mask = stack.images[0] > 0.3 * stack.images[0].max()  # the repulsive core over the atoms
    rows, cols = np.nonzero(mask)
    assert abs(cols.mean() - 63.5) < 3 and abs(rows.mean() - 63.5) < 3
    assert cols.std() > 1.3 * rows.std()
    fg_rows, fg_cols = np.nonzero(render_depiction(molecule).sum(axis=2) > 0)
    assert abs(fg_cols.mean() - cols.mean()) < 2 and abs(fg_rows.mean() - rows.mean()) < 2


def _check_shards(dataset) -> list[dict]:
    """The shard contract, read with plain pyarrow: returns the rows without their stacks."""
    table = pq.read_table(dataset) if isinstance(dataset, Path) else dataset
    stacks = table["stack"].combine_chunks().to_numpy_ndarray()
    assert stacks.shape[1:] == (10, 128, 128) and stacks.dtype == np.float16
    rows = table.drop_columns(["stack"]).to_pylist()
    for row in rows:
        assert extract_graph(decode_png(row["target_png"])).formula == row["formula"]
        assert row["split"] == split_of(row["smiles"])
        assert hill_formula([a["element"] for a in row["atoms"]]) == row["formula"]
        assert all(0 <= b["i"] < len(row["atoms"]) and 0 <= b["j"] < len(row["atoms"]) for b in row["bonds"])
    return rows


@pytest.mark.slow
def test_simulate_dataset_local_resume_and_export(ray_cluster, tmp_path):
    from raypipe.pipelines.simulate import simulate_dataset
    from raypipe.simulation.export import export_archive

    out = tmp_path / "sim"
    summary = simulate_dataset(MOLECULES, str(out), parameter_sets=[(0.6, 0.6)], shard_size=2)
    assert (summary.shards, summary.written, summary.rows, summary.rejects) == (2, 2, 2, 2)
    rows = _check_shards(out / "shards")
    assert sorted(r["formula"] for r in rows) == ["C10H8", "C6H3BrCl2"]
    rejects = pq.read_table(out / "rejects").to_pylist()
    reasons = {r["molecule_id"]: r["reason"] for r in rejects}
    assert "not quasi-planar" in reasons["mol-00002"] and "fragments" in reasons["mol-00003"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == 2 and manifest["rejects"] == 2 and len(manifest["shards"]) == 2

    # a killed run: one shard lost, a temporary file left behind -> the re-run redoes only that shard,
    # identically (deterministic for a seed)
    before = pq.read_table(out / "shards" / "shard-00000.parquet")
    (out / "shards" / "shard-00000.parquet").unlink()
    (out / "shards" / ".shard-00000.parquet.dead.tmp").write_bytes(b"half")
    again = simulate_dataset(MOLECULES, str(out), parameter_sets=[(0.6, 0.6)], shard_size=2)
    assert (again.skipped, again.written) == (1, 1)
    assert sorted(r["formula"] for r in _check_shards(out / "shards")) == ["C10H8", "C6H3BrCl2"]
    assert pq.read_table(out / "shards" / "shard-00000.parquet").equals(before)
    with pytest.raises(ValueError, match="other settings"):
        simulate_dataset(MOLECULES, str(out), parameter_sets=[(1.0, 0.6)], shard_size=2)

    archive = tmp_path / "sim.h5"
    assert export_archive(str(out), archive) == 2
    ids = list_archive(archive)
    stack = load_stack(f"{archive}::{ids[0]}")
    assert stack.images.shape == (10, 128, 128) and stack.metadata["truth"]["formula"] in ("C10H8", "C6H3BrCl2")


@pytest.mark.slow
def test_simulate_dataset_on_s3(ray_cluster, s3_server):
    from raypipe.pipelines.simulate import simulate_dataset
    from raypipe.storage import arrow_filesystem, filesystem

    uri = "s3://raypipe-test/sim"
    summary = simulate_dataset([NAPHTHALENE], uri, parameter_sets=[(1.0, 0.4)], storage_options=s3_server)
    assert summary.rows == 1
    fs, path = filesystem(uri, s3_server)
    table = pq.read_table(f"{path}/shards", filesystem=arrow_filesystem(fs))
    assert [r["formula"] for r in _check_shards(table)] == ["C10H8"]
    assert simulate_dataset([NAPHTHALENE], uri, parameter_sets=[(1.0, 0.4)], storage_options=s3_server).skipped == 1


def test_compact_shards_read_as_the_plain_ones_within_their_8_bits(tmp_path):
    """The compact form (8 bits a slice and each slice's range) reads back as the plain float16 stacks to
    within 0.2 % of each slice's range, through every reader: the training loop's, evaluation's and the
    shard stream; a data set holds one form, and asking to continue it in the other is refused."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from raypipe.pipelines.simulate import simulate_dataset
    from raypipe.resources import SAMPLE_SIM
    from raypipe.simulation.export import read_shard_rows
    from raypipe.simulation.schema import compact_stacks, is_compact, read_stacks, shard_schema
    from raypipe.storage import filesystem
    from raypipe.training.data import ShardStream, check_grid, read_shard
    from raypipe.model.config import ModelConfig

    compact = tmp_path / "compact"
    (compact / "shards").mkdir(parents=True)
    for path in sorted((SAMPLE_SIM / "shards").glob("*.parquet")):
        plain = pq.read_table(path)
        u8, lo, hi = compact_stacks(read_stacks(plain).astype(np.float32))
        schema = shard_schema(10, 128, compact=True)
        columns = {"stack_u8": pa.ExtensionArray.from_storage(schema.field("stack_u8").type,
                                                              pa.FixedSizeListArray.from_arrays(pa.array(u8.ravel()), 10 * 128 * 128)),
                   "stack_lo": pa.FixedSizeListArray.from_arrays(pa.array(lo.ravel()), 10),
                   "stack_hi": pa.FixedSizeListArray.from_arrays(pa.array(hi.ravel()), 10)}
        table = pa.Table.from_arrays([columns[n] if n in columns else plain[n] for n in schema.names], schema=schema)
        assert is_compact(table.schema) and not is_compact(plain.schema)
        pq.write_table(table, compact / "shards" / path.name)
        assert (compact / "shards" / path.name).stat().st_size < 0.5 * path.stat().st_size
    fs, _ = filesystem(str(compact))
    for path in sorted((SAMPLE_SIM / "shards").glob("*.parquet")):
        a = read_shard(fs, str(path), None, ["stack", "smiles"])
        b = read_shard(fs, str(compact / "shards" / path.name), None, ["stack", "smiles"])
        span = a["stack"].astype(np.float32).max(axis=(2, 3)) - a["stack"].astype(np.float32).min(axis=(2, 3))
        error = np.abs(b["stack"] - a["stack"].astype(np.float32)).max(axis=(2, 3))
        assert a["smiles"] == b["smiles"] and (error <= 0.002 * span + 1e-3).all()
    rows = list(read_shard_rows(str(compact)))
    assert len(rows) == 15 and rows[0]["stack"].shape == (10, 128, 128) and "stack_u8" not in rows[0]
    check_grid(str(compact), ModelConfig())
    stack, target = next(iter(ShardStream(str(compact), "train", batch_size=4)))
    assert stack.shape == (4, 10, 128, 128) and target.shape == (4, 3, 128, 128)
    with pytest.raises(ValueError, match="different storage forms.*compact.*plain"):  # one pool, one form
        check_grid([str(compact), str(SAMPLE_SIM)], ModelConfig())
    copy = tmp_path / "plain"
    shutil.copytree(SAMPLE_SIM, copy)
    with pytest.raises(ValueError, match="holds plain shards; continue it without --compact"):
        simulate_dataset(["c1ccccc1"], str(copy), compact=True, parameter_sets="0.6,0.4;1.0,0.6;1.4,1.0",
                         shard_size=4)


def test_training_pools_several_data_sets(tmp_path):
    """A run on several data sets (a catalogue's shards and, say, an element-analogue set) draws batches
    from the shards of all of them and takes validation rows data set after data set."""
    from raypipe.resources import SAMPLE_SIM
    from raypipe.model.config import ModelConfig
    import shutil

    from raypipe.training.data import ShardStream, check_grid, fixed_rows, list_shards

    other = tmp_path / "analogues"
    (other / "shards").mkdir(parents=True)
    first = sorted((SAMPLE_SIM / "shards").glob("*.parquet"))[0]
    shutil.copy(first, other / "shards" / "shard-00000.parquet")
    pool = [str(SAMPLE_SIM), str(other)]
    check_grid(pool, ModelConfig())
    stream = ShardStream(pool, "train", batch_size=2)
    stack, target = next(iter(stream))
    assert stack.shape == (2, 10, 128, 128) and target.shape == (2, 3, 128, 128)
    assert stream.shards_seen == len(list_shards(str(SAMPLE_SIM))) + 1
    alone = fixed_rows(str(SAMPLE_SIM), None, 1000)
    both = fixed_rows(pool, None, 1000)
    assert len(both) > len(alone) and [r["smiles"] for r in both[:len(alone)]] == [r["smiles"] for r in alone]
    with pytest.raises(ValueError, match="a data set's URI or a list"):
        ShardStream([], "train")
    # shares: the one-shard data set drawn for about a tenth of the shards, not in proportion to its size
    shared = ShardStream(pool, "train", shares=[9, 1], buffer_shards=4)
    groups = shared._groups()
    drawn = [uri for _ in range(100) for uri, _ in next(groups)]
    assert 0.05 < drawn.count(str(other)) / len(drawn) < 0.16 and set(drawn) == set(pool)
    with pytest.raises(ValueError, match="data_shares: one positive number per data set"):
        ShardStream(pool, "train", shares=[1.0])
