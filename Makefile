# One entry point for humans and CI. Everything runs from a local .venv that
# the first target to need it creates from pyproject.toml.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test lint protos bench fuzz clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(PY) scripts/demo.py

test: install
	$(PY) scripts/gen_protos.py --check
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

protos: install
	$(PY) scripts/gen_protos.py

clean:
	rm -rf $(VENV) build *.egg-info
