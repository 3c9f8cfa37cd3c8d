"""Train in this process with the plain torch loop (CPU or one GPU, no Ray): ``raypipe train --local``.

    python jobs/train_local.py --config jobs/configs/train-shipped-cpu.yaml [--run-name NAME] [--steps N]

The same run name resumes from its last checkpoint; ``--init-from MODEL`` starts from a model's weights.
"""

import sys

from raypipe.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", "--local", *sys.argv[1:]]))
