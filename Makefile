# Two commands on a fresh machine:  make demo  |  make test   (each runs the idempotent setup first)
# The demo's setup leaves the extras out (ONNX, OpenVINO, NNCF, the robustness corruptions, TIDE, pytest): the demo
# uses none of them, and a tool that needs one says which to install. make test installs them all.
PYTHON := $(if $(PIT_DET_PYTHON),$(PIT_DET_PYTHON),$(or $(PIT_DET_VENV),.venv)/bin/python)

.PHONY: setup setup-demo demo test
setup:
	bash scripts/setup.sh

setup-demo:
	bash scripts/setup.sh --extras none

demo: setup-demo
	$(PYTHON) -m pit_det.cli.demo

test: setup
	$(PYTHON) -m pytest -ra -n 2 --dist loadfile
