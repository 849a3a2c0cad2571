#!/usr/bin/env bash
# The nightly chain for one date (default: yesterday): ingest the day's impressions, regroup, evaluate.
#   cluster/schedule/nightly.sh [YYYY-MM-DD]
# Rerunning a failed night adds nothing twice: ingest rejects rows already loaded as duplicates (their
# load's rejects are replaced), the regroup replaces its run date and publishes it whole in gaip.runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
run_date=${1:-$(date -d yesterday +%F)}
export SPARK_MASTER=${SPARK_MASTER:-yarn} SPARK_PROPERTIES=${SPARK_PROPERTIES:-cluster/spark/yarn.properties}
cluster/submit.sh ingest --table raw.impressions --input "${OSMF_LANDING:-/landing/impressions}/$run_date" \
  --run-date "$run_date"
model=${OSMF_PAAG_MODEL:-/shared/osmf/paag/model.pt}
cluster/submit.sh regroup --model "$model" --run-date "$run_date"
# the run the regroup just published, evaluated on the cluster (the Makefile target would run locally)
cluster/submit.sh eval_groups --model "$model" --run-date "$run_date"
