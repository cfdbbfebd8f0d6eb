#!/usr/bin/env bash
# Your own CSV and your own network at the command line (run from the repository root).
# flowers.csv has a header row and the species (text) in the last column, the label by default.
set -euo pipefail
OUT=${OUT:-results/own-csv}
lowcomm run --data csv:examples/data/flowers.csv --model examples.models:flower_net \
    --loss examples.models:focal --algorithm local-sgd --workers 6 --partition dirichlet:0.5 \
    --rounds 60 --set lr=0.2 --set local_steps=4 --set batch_size=8 --out "$OUT"
