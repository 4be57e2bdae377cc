# Two commands on a fresh machine:  make demo  |  make test   (each runs the idempotent setup first)
PYTHON := $(if $(PIT_DET_PYTHON),$(PIT_DET_PYTHON),$(or $(PIT_DET_VENV),.venv)/bin/python)

.PHONY: setup demo test
setup:
	bash scripts/setup.sh

demo: setup
	$(PYTHON) -m pit_det.cli.demo

test: setup
	$(PYTHON) -m pytest -ra -n 2 --dist loadfile
