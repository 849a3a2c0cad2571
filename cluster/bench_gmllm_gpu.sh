#!/usr/bin/env bash
# bench-gmllm at the targets of docs/benchmarks.md on one GPU node within a fixed time: the runs go in order of
# priority, each (a bench of its own, so each writes its own report) with what is left of the budget, so a slow
# compile costs the runs after it and not the ones before. Runs of the same batches count their FLOPs once (a
# cache in OUT while the script runs). Each run's report goes to OUT, and the profiles of 3
# steps after each run's timed ones to OUT/profiles.txt; a run stopped at its limit is a row of its report, with the stage it was in.
#   usage: cluster/bench_gmllm_gpu.sh ROWS TOKENIZER OUT [SECONDS]
#   ROWS: what `python jobs/bench_gmllm.py export` wrote; TOKENIZER: a directory with SmolLM2's tokenizer.json
#   and tokenizer_config.json (the small profile's cached copy); SECONDS: the budget (default 540)
set -u
[ $# -ge 3 ] || { echo "usage: $0 ROWS TOKENIZER OUT [SECONDS]" >&2; exit 2; }
ROWS=$1 TOK=$2 OUT=$3 BUDGET=${4:-540}
PY=${PYTHON:-$(command -v python || command -v python3)}  # a GPU node may have python3 only
mkdir -p "$OUT/profiles"
T0=$(date +%s)
LOG=$OUT/log.txt
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$LOG"
bench() {  # name, share of the budget by which it must end (percent), bench_gmllm run flags
  local name=$1 until=$(( BUDGET * $2 / 100 )); shift 2
  local left=$(( until - ($(date +%s) - T0) ))
  if [ "$left" -lt 60 ]; then echo "skipped $name: $left s left" | tee -a "$LOG"; return; fi
  echo "=== $name ($(( $(date +%s) - T0 )) s in, $left s for it)" | tee -a "$LOG"
  timeout "$left" "$PY" jobs/bench_gmllm.py run --rows "$ROWS" --tokenizer "$TOK" --steps 10 --warmup 3 \
    --distinct-batches 4 --flop-rows 8 --flop-cache "$OUT/flops.json" --profile-dir "$OUT/profiles" --run-timeout $(( left - 8 )) \
    --report "$OUT/$name.json" "$@" 2>&1 | grep -v "^STAGE" | tail -20 | tee -a "$LOG"
  echo "$name ended $(( $(date +%s) - T0 )) s in" | tee -a "$LOG"
}
# the targets not yet met first; the 135M's FLOPs in few passes (counting them 8 rows at a time took 29 s of its
# share in the fourth GPU session); 135M at batch 128 too: a launch-bound step spreads its launches over more rows
bench pre17_b16 28 --shape smollm2-1.7b --phases pretrain --batch-sizes 16 --variants jobs
bench pre135_b64 60 --shape smollm2-135m --phases pretrain --batch-sizes 64 --variants jobs,graphs --flop-rows 64
bench grm17_b32 74 --shape smollm2-1.7b --phases grm --batch-sizes 32 --variants jobs
bench pre135_b128 86 --shape smollm2-135m --phases pretrain --batch-sizes 128 --variants jobs --flop-rows 64
bench pre17_b32 100 --shape smollm2-1.7b --phases pretrain --batch-sizes 32 --variants jobs
for f in "$OUT"/profiles/*.txt; do [ -e "$f" ] && { echo "##### $(basename "$f")"; cat "$f"; }; done > "$OUT/profiles.txt"
rm -rf "$OUT/profiles" "$OUT/flops.json"  # OUT holds the log, a report per run and the profiles (one file)
echo "done in $(( $(date +%s) - T0 )) s" | tee -a "$LOG"
