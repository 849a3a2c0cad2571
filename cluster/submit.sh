#!/usr/bin/env bash
# Submit an OSMF Spark job to a cluster:  cluster/submit.sh JOB [job flags...]
#   SPARK_MASTER=yarn cluster/submit.sh simulate --spark-config cluster/yarn.yaml --users 40000000 \
#       --products 2000000 --partitions 8000
# osmf_core travels as a zip (--py-files); Delta comes from Maven Central through --packages.
# The nodes need the pinned Python environment (requirements.lock, installed with --no-deps), or ship it:
#   SPARK_PROPERTIES=cluster/spark/yarn.properties cluster/submit.sh regroup --model ... --run-date ...
# (yarn.properties ships the archive packed by cluster/pack_env.sh; k8s and standalone files sit beside it).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
job="$1"; shift
delta_version=$(grep -E '^delta-spark==' "$here/requirements.lock" | cut -d= -f3)
scala_suffix=2.13
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT  # the zip is only needed while spark-submit runs
(cd "$here" && python3 -m zipfile -c "$build/osmf_core.zip" osmf_core)
spark-submit \
  --master "${SPARK_MASTER:-yarn}" \
  --deploy-mode "${SPARK_DEPLOY_MODE:-client}" \
  --packages "io.delta:delta-spark_${scala_suffix}:${delta_version}" \
  --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
  --py-files "$build/osmf_core.zip" \
  ${SPARK_PROPERTIES:+--properties-file "$SPARK_PROPERTIES"} \
  ${SPARK_SUBMIT_EXTRA:-} \
  "$here/jobs/$job.py" "$@"
