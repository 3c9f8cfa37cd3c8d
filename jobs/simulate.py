"""Simulate training shards (RDKit + ppafm on Ray Data): ``raypipe simulate``; see ``--help``."""

import sys

from raypipe.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["simulate", *sys.argv[1:]]))
