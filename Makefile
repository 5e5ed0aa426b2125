# charex: `make demo` runs the offline demo, `make test` the test suite. Both install what they need.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-slow fuzz bench clean

$(BIN)/charex: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the pinned CPU build first: a plain `torch` requirement would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/charex

install: $(BIN)/charex

demo: install
	$(BIN)/charex demo --out runs/demo --fetch-data

test: install
	$(BIN)/python -m pytest -q

# every input surface fuzzed at length: 1,500 generated cases per test, over 10,000 in all (tests/fuzz)
fuzz: install
	$(BIN)/python -m pytest -q tests/fuzz --hypothesis-profile=fuzz --hypothesis-show-statistics

test-slow: install
	$(BIN)/python -m pytest -q -o addopts='-p no:logging' -m slow

bench: install
	$(BIN)/python benchmarks/bench_generate.py

clean:
	rm -rf $(VENV) runs build *.egg-info
