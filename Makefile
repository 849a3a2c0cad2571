# OSMF: every target sets up what it needs first (a pinned virtual environment, Delta jars).
# The environment lives outside the checkout, keyed by the hash of requirements.lock, so a fresh
# clone (CI) reuses it instead of downloading torch again. Override with OSMF_VENV=... if needed.
SHELL := /bin/bash
LOCK := requirements.lock
LOCK_ID := $(shell cat $(LOCK) cluster/setup_env.sh | sha1sum | cut -c1-12)
OSMF_CACHE ?= $(HOME)/.cache/osmf
OSMF_VENV ?= $(OSMF_CACHE)/venv-$(LOCK_ID)
PY := PYTHONPATH=$(CURDIR) $(OSMF_VENV)/bin/python
PYTEST_ARGS ?=
WORLD ?=
FEATURES ?=
TRAIN ?=
ABLATION ?=
REGROUP ?=
EVAL ?=
Q ?=
SQL ?=
PAAG_MODEL ?= runs/paag/model.pt
INSTR ?=
PRETRAIN ?=
GRM ?=
EVAL_GRM ?=
GMLLM ?= runs/gmllm/model
GRM_MODEL ?= runs/grm/model
GRM_NO_GROUP ?= runs/grm_no_group/model
GMLLM_NO_GROUP ?= runs/gmllm_no_group/model
DPO ?=
DPO_RUN ?= runs/dpo
GEN ?=
EVAL_ONLINE ?=
CALIBRATE ?=
EVALUATE ?=
BENCH_GMLLM ?=
BENCH_SCALE ?=
GMLLM_DS ?= cluster/deepspeed/gmllm.json
NUM_GPUS ?= 1
# several nodes: DS_LAUNCH="--hostfile cluster/deepspeed/hostfile" DS_CONFIG=cluster/deepspeed/zero3_multinode.json
DS_LAUNCH ?= --num_gpus $(NUM_GPUS)
DS_CONFIG ?= cluster/deepspeed/paag.json

.PHONY: help setup demo test test-all simulate features train-paag paag-model paag-ablation paag-baselines regroup eval-groups instructions pretrain-gmllm train-grm eval-grm grm-models gmllm-no-group-model group-dpo generate eval-online bench bench-simulate bench-regroup bench-scale bench-gmllm calibrate-world evaluate ddl sql clean

help:
	@echo "make demo            set up, then run the pipeline end to end on the embedded default world"
	@echo "make test            set up, then run the default (fast) test suite"
	@echo "make test-all        also the slow tests"
	@echo "make simulate        simulate the ad world into the local Delta warehouse (WORLD='--users 1000 ...')"
	@echo "make train-paag      encoder features + PAAG training under the DeepSpeed launcher (TRAIN='--epochs 2')"
	@echo "make paag-ablation   the Table 2 ladder: AUROC of five rungs over seeds vs the oracle"
	@echo "make paag-baselines  reference AUROCs on the same split: lookups, full-batch vs minibatch linear"
	@echo "make regroup         nightly regroup: K-Means on e_u|t per product, GAIP tables (REGROUP='--run-date ...')"
	@echo "make eval-groups     the Table 1 analog: NDCG@5 and ARI of the groups against baseline groupings"
	@echo "make instructions    G-MLLM instruction rows (Table 5) and GRM pairs from the latest regroup (INSTR='--run-date ...')"
	@echo "make pretrain-gmllm  pre-train the group-token LLaVA under the DeepSpeed launcher (PRETRAIN='--epochs 2')"
	@echo "make train-grm       train the group-aware reward model from the G-MLLM (GRM='--no-group --pairs product': one-size)"
	@echo "make eval-grm        the Figure 3 analog: Pair Accuracy of GRM vs no group token vs 0/1/5/10 points"
	@echo "make group-dpo       Group-DPO: LoRA on the G-MLLM, sample-render-rank rounds with the frozen GRM (DPO='--robust')"
	@echo "make generate        one prompt and image per (product, group): gen tables, images, reports/gallery/index.html"
	@echo "make eval-online     the Table 3 analog: simulated online CTR of pretrained, one-size, OSMF variants, oracle"
	@echo "make evaluate        Tables 1, 3 and Figure 3 on 3 evaluation worlds x 2 seeds -> reports/evaluate.json, docs/results.md"
	@echo "make calibrate-world the v2 world's style lever on the development seed, from its truth (CALIBRATE='--style-scale 0.35')"
	@echo "make bench           all benchmarks (bench-simulate, bench-regroup, bench-gmllm)"
	@echo "make bench-regroup   clustering core vs a scikit-learn loop and MLlib, scaling, sampled silhouette error"
	@echo "make bench-scale     the whole regroup on 60k/200k/600k-user worlds, local and standalone: rows/s, stages, memory"
	@echo "make bench-gmllm     G-MLLM pre-training and GRM training steps: tokens/s, memory, MFU (BENCH_GMLLM='--shape smollm2-1.7b')"
	@echo "make ddl             regenerate sql/ddl/ from the table catalog"
	@echo "make sql Q=name      run sql/queries/name.sql on the local warehouse (no Q: list them; SQL='--run-date ...')"

setup:
	@bash cluster/setup_env.sh "$(OSMF_VENV)" "$(LOCK)"
	@bash cluster/setup_extras.sh "$(OSMF_VENV)" requirements-extras.lock

demo: setup
	$(PY) jobs/demo.py $(WORLD)

test: setup
	$(PY) -m pytest -m "not slow and not gpu" $(PYTEST_ARGS) tests

test-all: setup
	$(PY) -m pytest $(PYTEST_ARGS) tests

simulate: setup
	$(PY) jobs/simulate.py $(WORLD)

features: setup
	@test -d "$${OSMF_WAREHOUSE:-warehouse}/raw/impressions" || $(MAKE) simulate
	$(PY) jobs/paag_features.py $(FEATURES)

train-paag: features
	PYTHONPATH=$(CURDIR) $(OSMF_VENV)/bin/deepspeed $(DS_LAUNCH) jobs/train_paag.py \
		--deepspeed_config $(DS_CONFIG) $(TRAIN)

paag-model: setup  # trains PAAG with the default settings unless $(PAAG_MODEL) exists
	@test -f "$(PAAG_MODEL)" || $(MAKE) train-paag

paag-ablation: features
	$(PY) jobs/paag_ablation.py $(ABLATION)

paag-baselines: features
	$(PY) jobs/paag_baselines.py

regroup: paag-model
	$(PY) jobs/regroup.py --model $(PAAG_MODEL) $(REGROUP)

eval-groups: setup  # evaluates the latest complete regroup run; regroups first only when there is none
	@test -d "$${OSMF_WAREHOUSE:-warehouse}/gaip/runs" || $(MAKE) regroup
	$(PY) jobs/eval_groups.py --model $(PAAG_MODEL) $(EVAL)

instructions: setup
	@test -d "$${OSMF_WAREHOUSE:-warehouse}/gaip/runs" || $(MAKE) regroup
	$(PY) jobs/build_instructions.py $(INSTR)

pretrain-gmllm: setup
	@test -d "$${OSMF_WAREHOUSE:-warehouse}/feat/instructions" || $(MAKE) instructions
	PYTHONPATH=$(CURDIR) $(OSMF_VENV)/bin/deepspeed $(DS_LAUNCH) jobs/pretrain_gmllm.py \
		--deepspeed_config $(GMLLM_DS) $(PRETRAIN)

gmllm-model: setup  # pre-trains the G-MLLM with the default settings unless $(GMLLM) exists
	@test -d "$(GMLLM)" || $(MAKE) pretrain-gmllm

train-grm: gmllm-model
	PYTHONPATH=$(CURDIR) $(OSMF_VENV)/bin/deepspeed $(DS_LAUNCH) jobs/train_grm.py \
		--deepspeed_config $(GMLLM_DS) --gmllm $(GMLLM) $(GRM)

eval-grm: gmllm-model
	$(PY) jobs/eval_grm.py --deepspeed_config $(GMLLM_DS) --gmllm $(GMLLM) $(EVAL_GRM)

grm-models: gmllm-model  # the group-aware and the group-agnostic reward models, unless they exist
	@test -d "$(GRM_MODEL)" || $(MAKE) train-grm GRM="--out-dir $(patsubst %/model,%,$(GRM_MODEL))"
	@test -d "$(GRM_NO_GROUP)" || $(MAKE) train-grm GRM="--no-group --pairs product --out-dir $(patsubst %/model,%,$(GRM_NO_GROUP))"

group-dpo: grm-models
	PYTHONPATH=$(CURDIR) $(OSMF_VENV)/bin/deepspeed $(DS_LAUNCH) jobs/group_dpo.py \
		--deepspeed_config $(GMLLM_DS) --gmllm $(GMLLM) --grm $(GRM_MODEL) --out-dir $(DPO_RUN) $(DPO)

generate: setup
	@test -d "$(DPO_RUN)/adapter" || $(MAKE) group-dpo
	$(PY) jobs/generate.py --gmllm $(GMLLM) --grm $(GRM_MODEL) --dpo $(DPO_RUN) $(GEN)

gmllm-no-group-model: setup  # the G-MLLM pre-trained without the group token (OSMF without group), unless it exists
	@test -d "$(GMLLM_NO_GROUP)" || $(MAKE) pretrain-gmllm PRETRAIN="--no-group --out-dir $(patsubst %/model,%,$(GMLLM_NO_GROUP))"

eval-online: grm-models gmllm-no-group-model
	$(PY) jobs/eval_online.py --deepspeed_config $(GMLLM_DS) --gmllm $(GMLLM) --grm $(GRM_MODEL) \
		--grm-no-group $(GRM_NO_GROUP) --gmllm-no-group $(GMLLM_NO_GROUP) $(EVAL_ONLINE)

evaluate: setup  # every world from scratch unless its result exists (EVALUATE='--worlds 101 --seeds 0', '--retrain')
	$(PY) jobs/evaluate.py $(EVALUATE)

calibrate-world: setup
	$(PY) jobs/calibrate_world.py $(CALIBRATE)

bench: bench-simulate bench-regroup bench-scale bench-gmllm

bench-regroup: regroup
	$(PY) jobs/bench_regroup.py

bench-scale: paag-model  # reuses the default world's encoder features and PAAG; run it alone on the machine
	$(PY) jobs/bench_scale.py --model $(PAAG_MODEL) $(BENCH_SCALE)

bench-simulate: setup
	$(PY) jobs/bench_simulate.py

bench-gmllm: setup  # samples rows from the warehouse, then times DeepSpeed steps on this machine
	@test -d "$${OSMF_WAREHOUSE:-warehouse}/feat/instructions" || $(MAKE) instructions
	$(PY) jobs/bench_gmllm.py export
	$(PY) jobs/bench_gmllm.py run $(BENCH_GMLLM)

ddl: setup
	$(PY) -m osmf_core.data.ddl --out sql/ddl

sql: setup
	$(PY) jobs/sql.py $(Q) $(SQL)

clean:
	rm -rf warehouse reports/*.json spark-warehouse metastore_db derby.log .pytest_cache
