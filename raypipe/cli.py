"""The ``raypipe`` command line: one subcommand per job (``jobs/*.py`` are thin wrappers)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raypipe", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    depict = commands.add_parser("depict", help="depict molecules, extract their graphs back, score them")
    depict.add_argument("--smiles", type=Path, default=EXAMPLES / "molecules.smi",
                        help="a .smi file (SMILES [name] per line); default: the bundled examples")
    depict.add_argument("--out", type=Path, default=Path("out/depictions"), help="output folder (replaced whole)")

    sim = commands.add_parser("simulate", help="simulate training shards with ppafm on Ray")
    sim.add_argument("--molecules", default=None,
                     help=".smi or .csv file (path or s3:// URI); default: RDKit's Data/NCI/first_5K.smi")
    sim.add_argument("--out", required=True, help="output folder or s3:// prefix")
    sim.add_argument("--parameter-sets", default="quam24", help="quam24, random:K or A,K;A,K (Å, N/m)")
    sim.add_argument("--limit", type=int, default=None, help="only the first N molecules")
    sim.add_argument("--shard-size", type=int, default=8, help="molecules per shard")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--distance", type=float, default=6.0, help="closest tip height above the top atom (Å)")
    sim.add_argument("--actors", type=int, default=None, help="simulation actors (default: one per CPU)")
    sim.add_argument("--export-h5", type=Path, default=None, help="also write the rows to this HDF5 archive")
    sim.add_argument("--address", default=None, help="Ray address (default: the job's cluster or a local Ray)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "depict":
        from raypipe.chem.sources import read_molecule_list
        from raypipe.reports import write_depictions

        summary = write_depictions([(s, i) for i, s in read_molecule_list(args.smiles)], args.out)
        print(json.dumps(summary, indent=2))
    elif args.command == "simulate":
        import ray

        from raypipe.pipelines.simulate import simulate_dataset
        from raypipe.simulation.export import export_archive
        from raypipe.simulation.params import parse_parameter_sets
        from raypipe.simulation.ppm import SimulationSettings

        ray.init(address=args.address)
        summary = simulate_dataset(args.molecules, args.out, parameter_sets=parse_parameter_sets(args.parameter_sets),
                                   seed=args.seed, shard_size=args.shard_size, limit=args.limit,
                                   settings=SimulationSettings(distance=args.distance), num_actors=args.actors)
        print(json.dumps({**asdict(summary), "stacks_per_second": round(summary.stacks_per_second, 3)}, indent=2))
        if args.export_h5:
            print(f"exported {export_archive(args.out, args.export_h5)} stacks to {args.export_h5}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
