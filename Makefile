# The two commands a user needs: `make demo` (the main job) and `make test`.
# Each sets itself up: a .venv with torch==2.13.0 installed first (a plain `torch` requirement
# would pull a multi-GB CUDA build), then this package with its extras.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_MODEL := build/mobilenetv2-rgb-int8
DEMO_STREAM := build/demo-stream

.PHONY: demo test test-all lint venv bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[converter,monitor,dev]'
	touch $@

# The main job: build the default model to INT8 IR, then show the product on a continuous stream:
# the camera monitor watches a 30-second annotated stream (as a file played at its frame rate) and
# prints its events as they happen; then the online metrics against the annotation and a timeline.
demo: venv
	$(PY) -m converter build --arch mobilenetv2 --out $(DEMO_MODEL) --force
	$(PY) -m converter dataset synth --streams 1 --stream-seconds 30 --seed 2026 --out $(DEMO_STREAM)
	$(PY) -m vtn_edge.monitor --model $(DEMO_MODEL) --source $(DEMO_STREAM)/stream_0000.mp4 --name demo \
		--status-every 0 --log-level WARNING
	$(PY) -m vtn_edge evaluate $(DEMO_MODEL) --online $(DEMO_STREAM) --timeline-png build/demo-timeline
	@echo "timeline picture: build/demo-timeline/stream_0000.png"

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
