#!/bin/bash
# The model card's evaluations of the shipped model (README "Model card"): test and val splits with
# reliability diagrams, the held-out check, the real stacks of ../shared/experimental; results in out/eval/.
# Usage: bash bench/model_card.sh [DATA]  (after jobs/ship_model.py; DATA: a simulated dataset whose test and val
# splits it evaluates, default out/sim/catalog-r4)
cd "$(dirname "$0")/.."
M=raypipe/weights/raypipe-small.safetensors
DATA=${1:-out/sim/catalog-r4}
mkdir -p out/eval
.venv/bin/raypipe evaluate --data $DATA --split test --model $M --reliability out/eval/reliability-test.png --gallery out/eval/gallery-test.png > out/eval/test.json 2> out/eval/test.err
.venv/bin/raypipe evaluate --data $DATA --split val --limit 800 --model $M --reliability out/eval/reliability-val.png > out/eval/val.json 2> out/eval/val.err
.venv/bin/python bench/heldout.py --out out/sim/heldout-test --model $M > out/eval/heldout.json 2> out/eval/heldout.err
rm -rf out/eval/exp-labels out/eval/exp-labels-gallery
.venv/bin/raypipe label ../shared/experimental --out out/eval/exp-labels --settle 0 --estimate-fov --json > out/eval/exp.json 2> out/eval/exp.err
.venv/bin/python -c "
from raypipe.labels.table import read_labels
for r in read_labels('out/eval/exp-labels', columns=['source','formula','smiles','fov','fov_source','confidence','status']).to_pylist(): print(r)
" > out/eval/exp-rows.txt 2>&1
echo "done: out/eval/"
