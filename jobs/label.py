"""The nightly labelling job: ``raypipe label INPUT --out OUTPUT``; see ``--help``.

With no arguments it labels the bundled sample scans into out/labels with the shipped model.
"""

import sys

from raypipe.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["label", *sys.argv[1:]]))
