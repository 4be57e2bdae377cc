# Two commands on a fresh machine:  make demo  |  make test   (each runs the idempotent setup first)
# The demo's setup leaves the extras out (ONNX, OpenVINO, NNCF, the robustness corruptions, TIDE, pytest): the demo
# uses none of them, and a tool that needs one says which to install. make test installs them all.
PYTHON := $(if $(PIT_DET_PYTHON),$(PIT_DET_PYTHON),$(or $(PIT_DET_VENV),.venv)/bin/python)

# make lint: ruff's checks and its formatter's check (configured in pyproject.toml; make format rewrites the files).
# make test: the linter, then the whole suite on 2 workers, in a random order (pytest-randomly prints the seed;
# PYTEST_ARGS=--randomly-seed=N repeats an order), the 15 slowest tests listed. make test-fast: the tests not marked
# slow, without the setup (run make setup or make test once first). docs/testing.md.
PYTEST_ARGS ?=
.PHONY: setup setup-demo demo lint format test test-fast
setup:
	bash scripts/setup.sh

setup-demo:
	bash scripts/setup.sh --extras none

demo: setup-demo
	$(PYTHON) -m pit_det.cli.demo

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

test: setup
	$(MAKE) --no-print-directory lint PYTHON=$(PYTHON)
	$(PYTHON) -m pytest -ra -n 2 --dist loadfile --durations=15 $(PYTEST_ARGS)

test-fast:
	$(PYTHON) -m pytest -ra -n 2 --dist loadfile -m "not slow" --durations=15 $(PYTEST_ARGS)
