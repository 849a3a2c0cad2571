#!/usr/bin/env bash
# Pack the pinned Python environment for YARN executors:  cluster/pack_env.sh [OUT.tar.gz]
# Builds the environment from requirements.lock (cluster/setup_env.sh), adds this checkout's osmf_core
# to it, and packs it with venv-pack so that it unpacks anywhere as ./environment (yarn.properties ships it
# with spark.yarn.dist.archives). Run it on a machine with the cluster's OS and Python version.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-osmf_env.tar.gz}
venv=$(mktemp -d)/osmf-env
bash "$here/cluster/setup_env.sh" "$venv" "$here/requirements.lock"
"$venv/bin/pip" install --no-deps "$here" "venv-pack==0.2.0"
"$venv/bin/venv-pack" -p "$venv" -o "$out" --force
echo "packed $(du -h "$out" | cut -f1) into $out"
