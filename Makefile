# Entry points for a fresh machine with Python (3.11-3.13) and pip:
#   make demo   -- creates .venv, installs the library, runs the demo
#   make test   -- creates .venv, installs the library with test extras, runs the fast suite
#   make slow   -- the tests marked slow (examples with --quick, the demo, NUTS references)
#   make docs   -- installs the docs extra, builds the API reference (warnings are errors)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test slow docs bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/variational demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --durations=15 tests

slow: $(STAMP)
	$(PY) -m pytest -q -n 2 --durations=15 -m slow tests

docs: $(STAMP)
	$(PY) -m pip install --quiet -e ".[docs]"
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

bench: $(STAMP)
	$(PY) benchmarks/radon_steps.py

clean:
	rm -rf $(VENV) build src/*.egg-info docs/_build
