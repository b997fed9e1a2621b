# One runner for humans and CI. Every target creates .venv first if it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_STAMP := $(VENV)/.demo-stamp
DATA ?= .sealtrail-demo
# Extra options for `sealtrail demo`, e.g. make demo DEMO_ARGS="--exit --json"
DEMO_ARGS ?=

.PHONY: demo test softhsm lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Sealtrail needs Python 3.11 or newer (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $(STAMP)

# The demo needs the package only (no test tools): a first look stays quick to install.
$(DEMO_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Sealtrail needs Python 3.11 or newer (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@touch $(DEMO_STAMP)

# Starts clean every time (docs/demo.md); leaves the server up until Ctrl-C.
demo: $(DEMO_STAMP)
	$(BIN)/sealtrail demo --data-dir $(DATA) $(DEMO_ARGS)

test: $(STAMP) softhsm
	$(BIN)/python -m pytest

# SoftHSM2 lets the PKCS#11 tests run against a software HSM. It is installed only when it
# is missing and we are root with apt-get; without it those tests are skipped, never failed.
softhsm: $(STAMP)
	@if $(BIN)/python -c 'import sys; from sealtrail.keys import find_pkcs11_module as find; m = find(); sys.exit(0 if m is not None and m.is_file() else 1)' 2>/dev/null \
		&& command -v softhsm2-util >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		export DEBIAN_FRONTEND=noninteractive; \
		{ apt-get install -y -qq softhsm2 >/dev/null 2>&1 \
			|| { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq softhsm2 >/dev/null 2>&1; }; } \
			|| echo "SoftHSM2 could not be installed with apt-get: the HSM (PKCS#11) tests will be skipped"; \
	else \
		echo "SoftHSM2 is not installed (Debian package softhsm2; needs root): the HSM (PKCS#11) tests will be skipped"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/sealtrail bench log --table
	$(BIN)/sealtrail bench register --table
	$(BIN)/sealtrail bench provenance --table

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .mypy_cache .ruff_cache
