# The two commands a user needs: `make demo` (the main job) and `make test`.
# Each sets itself up: a .venv with torch==2.13.0 installed first (a plain `torch` requirement
# would pull a multi-GB CUDA build), then this package with its extras.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_MODEL := build/mobilenetv2-rgb-int8
DEMO_CLIPS := build/demo-clips/core

.PHONY: demo test test-all lint venv bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[converter,monitor,dev]'
	touch $@

# The main job: build the default model to INT8 IR, then label every frame of a few clips.
demo: venv
	$(PY) -m converter build --arch mobilenetv2 --out $(DEMO_MODEL) --force
	$(PY) -m converter dataset synth --out build/demo-clips --clips-per-class 1 --seed 2026 --splits core
	for c in open rotate_cw red_to_blue; do \
		$(PY) -m vtn_edge run $(DEMO_MODEL) $(DEMO_CLIPS)/$$c/$${c}_0000.mp4 || exit 1; done

lint: venv
	$(PY) -m ruff check converter vtn_edge tests benchmarks examples

test: lint
	$(PY) -m pytest -m "not slow"

test-all: lint
	$(PY) -m pytest

bench: venv
	$(PY) -m vtn_edge bench ir_models/mobilenetv2-rgb-int8 --source ../shared/data/videos/v_ApplyEyeMakeup_g01_c01.avi

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
