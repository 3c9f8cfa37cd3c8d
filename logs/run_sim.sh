#!/bin/bash
# resumable: re-running skips finished shards
cd /work/main
exec nice -n 10 .venv/bin/python jobs/simulate.py --molecules raypipe/chem/data/training_molecules.csv.gz \
  --out out/sim/catalog-r4 --parameter-sets random:4 --shard-size 40 --grid-density 8 --distance-jitter 0.3 --seed 0
