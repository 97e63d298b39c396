# Task vocabulary. The README's two commands are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PYTHON ?= python3
# Torch is installed before the package so pip never picks a multi-GB build by accident.
# No GPU: the CPU wheel (add TORCH_INDEX=https://download.pytorch.org/whl/cpu where that
# index is reachable). GPU: the same version, default (CUDA) build.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
UI_PORT ?= 5000
SERVE_PORT ?= 5001
NPROC ?= 2
TEST_WORKERS ?= auto  # pytest-xdist processes for make test (one test file each at a time)

BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
PIP := $(BIN)/python -m pip

.PHONY: help setup data-deps run repro test test-fast lint format params exp ui plots serve train-ddp train-multinode bench bench-data bench-monitor bench-serve bench-tune clean setup-team postgres-deps stack-up stack-down stack-status push pull

help:
	@echo "make run     install everything, then run the whole pipeline (dvc repro)"
	@echo "make test    install everything, then run the test suite"
	@echo "make ui      MLflow UI on the local store (http://127.0.0.1:$(UI_PORT))"
	@echo "make plots   dvc plots show, viewable offline -> dvc_plots/index.html"
	@echo "make serve   serve models:/<register.model_name>@champion on 127.0.0.1:$(SERVE_PORT) (more options: SERVE_ARGS='--model URI')"
	@echo "make train-ddp  the train stage on NPROC processes (GPUs: nccl; CPU: gloo)"
	@echo "make train-multinode NNODES=2 NODE_RANK=<r> MASTER_ADDR=<host> MASTER_PORT=<p>  the same across machines (node 0 writes outputs)"
	@echo "make bench   engine vs bare-loop throughput and time-to-accuracy -> reports/bench.json"
	@echo "make bench-data   peak RSS of every data stage, train (1 epoch) and evaluate at 5,000 and 40,000 96x96 RGB PNGs, ingest vs a bare Pillow pool -> reports/bench_data.json"
	@echo "make bench-serve  request latency p50/p99, with and without the serving guard"
	@echo "make bench-monitor  mlpipe monitor's false-alarm and detection rates -> reports/bench_monitor.json"
	@echo "make params  regenerate params.yaml from conf/ (as dvc exp run does)"
	@echo "make exp S='-S train.lr=0.01'  check the overrides (one line if wrong), then dvc exp run"
	@echo "make lint    ruff + mypy"
	@echo "make stack-up / stack-down / stack-status  PostgreSQL + moto (S3) + mlflow server on 127.0.0.1 -> source .stack/env"
	@echo "make push / pull  dvc push / pull to the team remote (make stack-up writes it to .dvc/config.local)"

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
	  echo "torch already installed: $$($(BIN)/python -c 'import torch; print(torch.__version__)')"; \
	else \
	  $(PIP) install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)); \
	fi
	$(PIP) install -q -e ".[dev]"
	@touch $@

# The Debian package dataset-fashion-mnist ships the official IDX files; ingest also
# accepts data.path or downloads them, so a failure here is only a warning.
data-deps:
	@if [ ! -e "$(FMNIST_DIR)/train-images-idx3-ubyte.gz" ] && command -v apt-get >/dev/null; then \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  echo "installing dataset-fashion-mnist with apt-get"; \
	  { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; } \
	    || echo "warning: apt-get could not install dataset-fashion-mnist; ingest will try data.path, then the download"; \
	fi

run: setup data-deps repro

repro:
	dvc repro

# The team stack (issue 12): the .[team] extra, and PostgreSQL's server binaries.
setup-team: $(VENV)/.installed-team

$(VENV)/.installed-team: $(VENV)/.installed pyproject.toml
	$(PIP) install -q -e ".[dev,team]"
	@touch $@

postgres-deps:
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	    && command -v apt-get >/dev/null; then \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  echo "installing postgresql with apt-get"; \
	  { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq postgresql; } \
	    || echo "warning: apt-get could not install postgresql; the team-stack test will skip"; \
	fi

stack-up: setup-team postgres-deps
	$(BIN)/python -m mlpipe.stack up

stack-down:
	$(BIN)/python -m mlpipe.stack down

stack-status:
	$(BIN)/python -m mlpipe.stack status

push: setup-team
	dvc push -r team

pull: setup-team
	dvc pull -r team

test: setup setup-team postgres-deps
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: setup
	$(BIN)/python -m pytest -m "not integration and not slow"

lint: setup
	$(BIN)/ruff check src pipelines tests hydra_plugins
	$(BIN)/ruff format --check src pipelines tests hydra_plugins
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix src pipelines tests hydra_plugins
	$(BIN)/ruff format src pipelines tests hydra_plugins

params: setup
	$(BIN)/python -m mlpipe.cli params

# dvc exp run's own composition reports an unknown key or group as a multi-line
# "unexpected error": check the same overrides first, in one line.
exp: setup
	$(BIN)/python -m mlpipe.cli params --check $(S)
	$(BIN)/dvc exp run $(S)

# `dvc plots show` with Vega inlined (from the npm registry, cached), so the page renders
# offline; DVC's default page loads Vega from a CDN.
plots: setup
	$(BIN)/python -m mlpipe.plots_page --cache .dvc/tmp/vega --out .dvc/tmp/vega/template.html
	$(BIN)/dvc plots show --html-template .dvc/tmp/vega/template.html -o dvc_plots
	@echo "open dvc_plots/index.html (works offline)"

# `mlpipe ui` prints the URL of the experiment's runs, then runs `mlflow ui` with one
# worker and no job runner (the defaults: 16 processes, 3.2 GiB on a 2-core machine).
ui: setup
	$(BIN)/mlpipe ui --host 127.0.0.1 --port $(UI_PORT)

# SERVE_ARGS: more `mlpipe serve` options, e.g. SERVE_ARGS='--model models:/fashion-mnist/3'
serve: setup
	MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" \
	  $(BIN)/mlpipe serve --host 127.0.0.1 --port $(SERVE_PORT) $(SERVE_ARGS)

# The train stage under torchrun; `dvc commit` records its outputs so dvc repro does not retrain.
train-ddp: setup
	$(BIN)/torchrun --standalone --nproc_per_node=$(NPROC) -m pipelines.train --params params.yaml \
	  --data data/processed --model-dir models --report reports/train.json \
	  --curves reports/plots/training_curves.csv
	$(BIN)/dvc commit -f train

# Across machines: static rendezvous (node 0 hosts it and is the DVC workspace that writes the
# outputs and runs dvc commit); a node that never joins fails the run after JOIN_TIMEOUT s.
NNODES ?= 2
NODE_RANK ?= 0
MASTER_ADDR ?= 127.0.0.1
MASTER_PORT ?= 29500
JOIN_TIMEOUT ?= 60
train-multinode: setup
	$(BIN)/torchrun --nnodes=$(NNODES) --node-rank=$(NODE_RANK) --nproc-per-node=$(NPROC) \
	  --master-addr=$(MASTER_ADDR) --master-port=$(MASTER_PORT) --rdzv-conf timeout=$(JOIN_TIMEOUT) \
	  -m pipelines.train --params params.yaml \
	  --data data/processed --model-dir models --report reports/train.json \
	  --curves reports/plots/training_curves.csv
	@if [ "$(NODE_RANK)" = 0 ]; then $(BIN)/dvc commit -f train; fi

# Runs with torch + numpy (+ omegaconf, tqdm) alone, e.g. on a GPU box:
#   make bench BENCH_ARGS="--models cnn,resnet,vit --device cuda"
bench: setup
	$(BIN)/python -m mlpipe.train.bench $(BENCH_ARGS)

# Memory and speed of the data stages on generated 96x96 RGB PNG folders (numpy, Pillow):
#   make bench-data BENCH_DATA_ARGS="--quick"   (or --sizes 5000,40000 --workers 2)
bench-data: setup
	$(BIN)/python -m mlpipe.ingest.bench $(BENCH_DATA_ARGS)

# False alarms on held-out batches, detection by shift and batch size (torch, numpy, scipy):
#   make bench-monitor BENCH_MONITOR_ARGS="--null-trials 1000 --sizes 50,200"
bench-monitor: setup
	$(BIN)/python -m mlpipe.monitor.bench $(BENCH_MONITOR_ARGS)

# Batch-1 and batch-1024 latency p50/p99, mlflow models serve vs mlpipe serve (same model):
#   make bench-serve BENCH_SERVE_ARGS="--requests 5000"
bench-serve: setup
	$(BIN)/python -m mlpipe.tracking.serve_bench $(BENCH_SERVE_ARGS)

# The tuner's overhead per trial and the trials per hour pruning saves (digits, CPU):
#   make bench-tune BENCH_TUNE_ARGS="--trials 20 --epochs 6"
bench-tune: setup
	$(BIN)/python -m mlpipe.tune.bench $(BENCH_TUNE_ARGS)

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache
