"""Train the GAN on Ray Train: ``raypipe train --config FILE``; see ``--help``.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/train.py --config jobs/configs/train-small-cpu.yaml
"""

import sys

from raypipe.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
