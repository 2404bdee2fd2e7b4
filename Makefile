# Every target sets up what it needs: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# nbgrader runs `alembic` as a command: the venv's bin must be on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install demo test test-fast lab release samples bench clean

install: $(STAMP)
	@command -v bwrap >/dev/null || echo "note: cs-dense autograde runs student code in a bubblewrap sandbox: sudo apt install bubblewrap"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "cs_dense needs Python 3.11; set PYTHON=/path/to/python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $(STAMP)

demo: install
	$(BIN)/cs-dense demo

# Two pytest workers share the cores: one PyTorch thread each (more threads than cores
# make the notebooks' training loops many times slower).
test: install
	OMP_NUM_THREADS=1 $(BIN)/pytest -n 2 --dist loadscope --timeout 900 tests solutions --nbval-lax --nbval-cell-timeout 300

# The developer's loop: everything but the slow tiers (notebooks, nbgrader round trips,
# the demo, benchmark smoke runs); see tests/conftest.py.
test-fast: install
	OMP_NUM_THREADS=1 $(BIN)/pytest -n 2 -m "not slow" tests

lab: install
	$(BIN)/jupyter lab notebooks

release: install
	$(BIN)/cs-dense release

samples: install
	$(BIN)/cs-dense samples

bench: install
	$(BIN)/python benchmarks/bench_boxes.py
	$(BIN)/python benchmarks/bench_map.py
	$(BIN)/python benchmarks/bench_upsample.py
	$(BIN)/python benchmarks/bench_roi.py
	$(BIN)/python benchmarks/bench_detector.py
	$(BIN)/python benchmarks/bench_single_stage.py
	$(BIN)/python benchmarks/bench_one_stage.py
	$(BIN)/python benchmarks/bench_hungarian.py
	$(BIN)/python benchmarks/bench_set_prediction.py
	$(BIN)/python benchmarks/bench_mask_rcnn.py
	$(BIN)/python benchmarks/bench_explain.py
	$(BIN)/python benchmarks/bench_grading.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
