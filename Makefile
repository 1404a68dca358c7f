# Two commands matter: `make demo` (the federated pipeline on its embedded default, through
# kfp.local) and `make test`. Both bootstrap .venv from the pinned requirements.lock.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format components bench clean

$(STAMP): requirements.lock requirements-dev.lock setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fedpipe run

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

components: $(STAMP)
	$(BIN)/fedpipe compile-components

bench: $(STAMP)
	$(BIN)/python benchmarks/round_time.py
	$(BIN)/python benchmarks/dp_overhead.py
	$(BIN)/python benchmarks/secagg.py
	$(BIN)/python benchmarks/task_overhead.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
