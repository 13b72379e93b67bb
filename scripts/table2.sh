#!/usr/bin/env bash
# One Table 2 row (issue 15): generate N crystals with a packaged model (srd-sample --pretrained), then score
# them with the community's protocol (srd-evaluate gen: CDVAE's thresholds and SyMat's), in R space
# (srd-evaluate repr) and for uniqueness / novelty against the model's training crystals (srd-evaluate sun).
#   usage: scripts/table2.sh DATASET N SEED [OUTROOT] [extra srd-sample flags...]
#   e.g.   scripts/table2.sh perov_5 1000 0
# Outputs: OUTROOT/DATASET_nN_sSEED/{metrics.json, repr/repr.json, sun.json, summary.json, ...}.
# Resumable: rerunning reuses the samples and the finished reconstructions.
set -euo pipefail
ds=$1; n=$2; seed=$3; root=${4:-runs/table2}; shift $(( $# < 4 ? $# : 4 ))
bin=${SRD_BIN:-.venv/bin}
out=$root/${ds}_n${n}_s${seed}
case $ds in
  perov_5) train=(data/perov_5/train.csv.gz) ;;
  mp_20) train=(data/mp_20/train_PARTIAL.csv.gz data/mp_20/val.csv.gz) ;;
  carbon_24) train=(data/carbon_24/val.csv.gz) ;;
  *) echo "unknown dataset $ds" >&2; exit 2 ;;
esac
"$bin/srd-sample" --pretrained "$ds" -n "$n" -o "$out" --seed "$seed" --sampling-steps 200 -q "$@"
"$bin/srd-evaluate" gen "$out" --reference "data/$ds/test.csv.gz" -q
"$bin/srd-evaluate" repr "$out/representations.pt" --reference "data/$ds/test.csv.gz" \
  --stats "python/srd/pretrained/$ds.pt" -o "$out/repr" -q
"$bin/srd-evaluate" sun "$out" --train "${train[@]}" -q
