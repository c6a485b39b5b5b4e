# Two entry points for a fresh machine with Python 3.11 and pip:
#   make demo   -- creates .venv, installs the library, runs the demo
#   make test   -- creates .venv, installs the library with test extras, runs the suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/variational demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --durations=15 tests

bench: $(STAMP)
	$(PY) benchmarks/radon_steps.py

clean:
	rm -rf $(VENV) build src/*.egg-info
