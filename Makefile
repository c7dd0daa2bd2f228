# augserve: `make run` (set up + the default comparison) and `make test` (set up + all tests).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -c constraints.txt
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(PIP) -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	WANDB_MODE=offline $(BIN)/python serve.py

test: $(STAMP)
	WANDB_MODE=offline $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python experiments/bench_sim.py

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
