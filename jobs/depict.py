"""Depict bundled (or given) molecules, extract their graphs back and score them: ``raypipe depict``."""

import sys

from raypipe.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["depict", *sys.argv[1:]]))
