#!/usr/bin/env bash
# Crystal structure prediction rows (issue 13), DiffCSP's protocol: for a seeded random sample of N test
# crystals, their compositions go into a packaged model, K structures come out of each, and
# srd-evaluate csp scores match @1 / @K and RMSE.
#   usage: scripts/csp.sh DATASET N K [SEED] [OUTROOT]
#   e.g.   scripts/csp.sh mp_20 1000 1
set -euo pipefail
ds=$1; n=$2; k=$3; seed=${4:-0}; root=${5:-runs/csp}
bin=${SRD_BIN:-.venv/bin}
out=$root/${ds}_n${n}_k${k}_s${seed}
"$bin/srd-sample" --pretrained "$ds" --compositions-from "data/$ds/test.csv.gz" --sample "$n" --sample-seed "$seed" \
  --samples-per-composition "$k" -o "$out" --seed "$seed" --sampling-steps 200 -q
"$bin/srd-evaluate" csp "$out" -q
