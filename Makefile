# The two commands a user needs: `make demo` (the main job) and `make test`.
# Each sets itself up: a .venv with torch==2.13.0 installed first (a plain `torch` requirement
# would pull a multi-GB CUDA build), then this package with its extras.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CLIP ?= ../shared/data/videos/arm_wrestling.mp4
MODEL ?= ir_models/mobilenetv2-rgb-int8

.PHONY: demo test test-all lint venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[converter,dev]'
	touch $@

demo: venv
	$(PY) -m converter build --arch mobilenetv2 --force
	$(PY) -m vtn_edge run $(MODEL) $(CLIP)

lint: venv
	$(PY) -m ruff check converter vtn_edge tests examples

test: lint
	$(PY) -m pytest -m "not slow"

test-all: lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
