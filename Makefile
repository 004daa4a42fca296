# One entry point for humans and CI. Everything runs from a local .venv that
# the first target to need it creates from pyproject.toml.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# sslyze cannot share .venv (it pins an older cryptography): its own virtualenv.
TLSSCAN       := .venv-tlsscan
TLSSCAN_STAMP := $(TLSSCAN)/.installed-stamp
# make fuzz: how long, in seconds, all fuzz targets run together.
FUZZ_SECONDS ?= 300

.PHONY: install tlsscan demo test test-standalone lint protos bench fuzz clean screenshots

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

tlsscan: $(TLSSCAN_STAMP)

$(TLSSCAN_STAMP): pyproject.toml
	$(PYTHON) scripts/tlsscan_venv.py $(TLSSCAN)
	touch $(TLSSCAN_STAMP)

demo: install
	$(PY) scripts/demo.py

# Records Transfer side by side with CSV + GPG on real servers (README "Performance"):
# on SQLite, then B2 and B3 again with the districts on a throwaway PostgreSQL
# (scripts/test_postgres.py). Writes bench-results.json; `--quick` is the test's toy run.
bench: install
	$(PY) scripts/test_postgres.py -- sh -c '$(PY) -m scripts.bench --postgres "$$RT_TEST_POSTGRES_URL"'

# Every suite runs on SQLite and on PostgreSQL: scripts/test_postgres.py starts a
# throwaway PostgreSQL on loopback for the run (RT_TEST_POSTGRES_URL) and stops it.
# RT_REQUIRE_TLSSCAN: the TLS scan fails, rather than skips, without .venv-tlsscan.
test: install tlsscan
	$(PY) scripts/gen_protos.py --check
	RT_REQUIRE_TLSSCAN=1 $(PY) scripts/test_postgres.py -- $(PY) -m pytest --durations=30

# The repository stands alone: a fresh clone of HEAD, with nothing beside it,
# runs the tests that read published vectors (tests/vectors/). CI runs this.
test-standalone: install
	rm -rf build/standalone && mkdir -p build/standalone
	git clone --quiet . build/standalone/clone
	cd build/standalone/clone && PYTHONPATH=$$PWD $(abspath $(PY)) -m pytest -q tests/unit/crypto

# A PNG of each console page (build/screenshots), taken by the console's browser tests
# as they run (Debian chromium + chromium-driver).
screenshots: install
	rm -rf build/screenshots
	RT_SCREENSHOTS=$(abspath build/screenshots) $(PY) -m pytest -q tests/console
	@ls build/screenshots

# Fuzz the envelope, header and batch parsers (atheris, or hypothesis where
# atheris does not install) for FUZZ_SECONDS; make test runs them briefly.
fuzz: install
	$(PY) -m tests.security.fuzz --seconds $(FUZZ_SECONDS)

# lint-imports: the floors of the district server, the pure core, the client
# library that imports no server (contracts in pyproject.toml [tool.importlinter]).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

protos: install
	$(PY) scripts/gen_protos.py

clean:
	rm -rf $(VENV) $(TLSSCAN) build *.egg-info
