# Two commands matter: `make demo` (the federated pipeline on its embedded default, through
# kfp.local) and `make test`. Both bootstrap .venv from the pinned requirements.lock.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-long lint format components bench images image-build manifests clean

$(STAMP): requirements.lock requirements-dev.lock setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fedpipe run

# Two xdist workers, one test file at a time each (a file's module fixtures stay in one
# process); tests/conftest.py puts the kfp.local files first.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

test-long: $(STAMP)
	$(BIN)/python -m pytest -q -m long

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

components: $(STAMP)
	$(BIN)/fedpipe compile-components

# MNIST for the benchmarks (the IDX files of shared/data/mnist next to the repo).
MNIST_DIR ?= ../shared/data/mnist

# One run prints every ratio of docs/performance.md: round vs compute floor, SecAgg server
# vs plain sum, DP aggregate vs plain, cohort scaling, agents vs in-process clients, and
# the clients' training alone against the floor (client_calls.py)
# (kfp.local: round_time.py without --skip-kfp).
bench: $(STAMP)
	$(BIN)/python benchmarks/round_time.py --skip-kfp --skip-plain --data-dir $(MNIST_DIR)
	$(BIN)/python benchmarks/client_calls.py --data-dir $(MNIST_DIR)
	$(BIN)/python benchmarks/secagg.py
	$(BIN)/python benchmarks/dp_overhead.py --data-dir $(MNIST_DIR)
	$(BIN)/python benchmarks/scale.py --data-dir $(MNIST_DIR)
	$(BIN)/python benchmarks/coordinator.py
	$(BIN)/python benchmarks/agents_round.py --data-dir $(MNIST_DIR)
	$(BIN)/python benchmarks/compiled_size.py
	$(BIN)/python benchmarks/task_overhead.py

# What can be checked of the images without a Docker engine: lint, and the size estimate.
images: $(STAMP)
	$(BIN)/hadolint images/runtime.Dockerfile images/agent.Dockerfile
	$(BIN)/python images/estimate_size.py requirements.lock

# A real build of both images without a Docker engine (buildah, vfs, chroot; as root, with
# buildah and debootstrap installed), the size and user check, and a smoke test of three
# components inside the runtime image. Not part of `make test` or CI: it took 16 minutes
# here (images/README.md).
image-build:
	nice -n 15 images/build.sh

# Build and schema-check every kustomize overlay (offline).
manifests: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_manifests.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
