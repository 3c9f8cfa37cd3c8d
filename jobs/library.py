"""Build a library of known molecules for identification (``raypipe library build``).

    python jobs/library.py build molecules.smi --out s3://lab/library [--simulate]
"""

import sys

from raypipe.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["library", *sys.argv[1:]]))
