"""The ``raypipe`` command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from raypipe.reports import read_smiles_file, write_depictions

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raypipe", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    depict = commands.add_parser("depict", help="depict molecules, extract their graphs back, score them")
    depict.add_argument("--smiles", type=Path, default=EXAMPLES / "molecules.smi",
                        help="a .smi file (SMILES [name] per line); default: the bundled examples")
    depict.add_argument("--out", type=Path, default=Path("out/depictions"), help="output folder (replaced whole)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "depict":
        summary = write_depictions(read_smiles_file(args.smiles), args.out)
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
