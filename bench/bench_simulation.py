"""Simulation throughput and where the time goes.

Usage: python bench/bench_simulation.py [--molecules 12] [--params random:8]

1. one process, PoCL on 1 thread and on every core, vs the Ray job (one actor per core, 1 thread each);
2. the time split of one stack: conformer, force field, relaxation, frequency-shift conversion, rendering;
3. ppafm settings that cut time (force-field grid density), with the image difference they cause.
Every measurement in one run, on the same molecules (the first accepted molecules of RDKit's NCI set).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from raypipe.simulation.params import parse_parameter_sets


def accepted_molecules(n: int) -> list[str]:
    from raypipe.chem.sources import read_molecule_list
    from raypipe.simulation.shards import MAX_CORRUGATION
    from raypipe import Molecule, MoleculeError

    out = []
    for _, smiles in read_molecule_list(None):
        try:
            if Molecule.from_smiles(smiles).corrugation <= MAX_CORRUGATION:
                out.append(smiles)
        except MoleculeError:
            continue
        if len(out) == n:
            return out
    return out


def one_process(smiles: list[str], spec) -> dict:
    """Runs in a child process (PoCL threads are fixed at OpenCL start): stacks per second + time split."""
    from raypipe import Molecule, render_depiction
    from raypipe.simulation.params import parameter_sets
    from raypipe.simulation.ppm import ATOMIC_NUMBERS, SimulationSettings, Simulator

    sets = {s: parameter_sets(spec, f"mol-{k:05d}", 0) for k, s in enumerate(smiles)}
    sim = Simulator()
    sim.simulate(Molecule.from_smiles(smiles[0]), sets[smiles[0]][:1])  # kernels compiled, buffers allocated
    start = time.perf_counter()
    for s in smiles:
        m = Molecule.from_smiles(s)
        render_depiction(m)
        sim.simulate(m, sets[s])
    n_stacks = sum(len(v) for v in sets.values())
    rate = n_stacks / (time.perf_counter() - start)

    split = {"conformer": 0.0, "force field": 0.0, "relaxation": 0.0, "df conversion": 0.0, "rendering": 0.0}
    afm = sim._afm
    for s in smiles:
        t = time.perf_counter(); m = Molecule.from_smiles(s); split["conformer"] += time.perf_counter() - t
        t = time.perf_counter(); render_depiction(m); split["rendering"] += time.perf_counter() - t
        zs = np.array([ATOMIC_NUMBERS[e] for e in m.elements], np.int32)
        xyz = m.positions.copy(); xyz[:, 2] -= xyz[:, 2].max() + sim.settings.distance
        t = time.perf_counter(); afm.prepareFF(xyz.astype(np.float32), zs, m.charges.astype(np.float32))
        afm.forcefield.queue.finish(); split["force field"] += time.perf_counter() - t
        for a, k in sets[s]:
            afm.setStiffness([k, k, 0.0, 30.0]); afm.setScanWindow(df_steps=int(round(a / 0.1)))
            t = time.perf_counter(); afm.prepareScanner(); afm.scanner.run_relaxStrokesTilted(bCopy=False, bFinish=True)
            afm.scanner.queue.finish(); split["relaxation"] += time.perf_counter() - t
            t = time.perf_counter(); afm.scanner.run_convolveZ(); split["df conversion"] += time.perf_counter() - t
    ms = {key: 1000 * v / len(smiles) for key, v in split.items()}
    per_molecule = {key: round(v, 1) for key, v in ms.items()}
    per_stack = round(sum(ms.values()) * len(smiles) / n_stacks, 1)

    grids = {}
    m = Molecule.from_smiles(smiles[0])
    reference = None
    for ppa in (10, 8, 5):
        sim_g = Simulator(SimulationSettings(pix_per_angstrom=ppa))
        sim_g.simulate(m, sets[smiles[0]][:1])
        t = time.perf_counter()
        for _ in range(3):
            images = sim_g.simulate(m, sets[smiles[0]][:1])[0].images
        seconds = (time.perf_counter() - t) / 3
        reference = images if reference is None else reference
        diff = np.abs(images - reference).max(axis=(1, 2)) / np.ptp(reference, axis=(1, 2))
        grids[f"{ppa} px/Å"] = {"s_per_molecule_1_set": round(seconds, 2),
                                "max_diff_%_of_range": round(100 * float(diff.max()), 2)}
    return {"stacks_per_s": round(rate, 3), "ms_per_molecule": per_molecule, "ms_per_stack_total": per_stack,
            "sets_per_molecule": n_stacks / len(smiles), "grid_density": grids}


def ray_job(smiles: list[str], spec) -> float:
    import ray

    from raypipe.pipelines.simulate import simulate_dataset

    ray.init(include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as out:
        summary = simulate_dataset(smiles, f"{out}/run", parameter_sets=spec, shard_size=1)  # start-up included
    return summary.stacks_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--molecules", type=int, default=12)
    parser.add_argument("--params", default="random:8", help="quam24, random:K or A,K;A,K")
    parser.add_argument("--child", choices=["process", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--smiles", help=argparse.SUPPRESS)
    args = parser.parse_args()
    params = parse_parameter_sets(args.params)
    if args.child:
        smiles = json.loads(args.smiles)
        result = one_process(smiles, params) if args.child == "process" else ray_job(smiles, params)
        print("RESULT " + json.dumps(result))
        return
    smiles = accepted_molecules(args.molecules)

    def child(kind: str, threads: str | None) -> dict | float:
        env = dict(os.environ)
        env.pop("POCL_MAX_PTHREAD_COUNT", None)
        if threads:
            env["POCL_MAX_PTHREAD_COUNT"] = threads
        out = subprocess.run([sys.executable, __file__, "--child", kind, "--smiles", json.dumps(smiles),
                              "--params", args.params], env=env, capture_output=True, text=True, check=True).stdout
        return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])

    single = child("process", "1")
    every_core = child("process", None)
    ray_rate = child("ray", None)
    print(json.dumps({
        "machine": f"{os.cpu_count()} cores", "molecules": len(smiles), "parameter_sets": args.params,
        "one_process_1_thread": single, "one_process_all_cores_stacks_per_s": every_core["stacks_per_s"],
        "ray_job_stacks_per_s": round(ray_rate, 3),
        "ray_vs_one_process_1_thread": round(ray_rate / single["stacks_per_s"], 2),
        "ray_vs_one_process_all_cores": round(ray_rate / every_core["stacks_per_s"], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
