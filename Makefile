# `make run` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: run test lint browser prometheus install install-dev fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamp files re-run the install whenever the dependency lists change.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/vigil demo --broker embedded $(ARGS)

# ruff, and the layer contracts of [tool.importlinter] in pyproject.toml.
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# The report tests open pages in headless Chromium, Debian's package: installed here when missing (as root).
APT_CHROMIUM := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
	  $(APT_CHROMIUM) || { apt-get update -qq && $(APT_CHROMIUM); }

# Prometheus, promtool and Alertmanager (Debian's packages) for the monitoring and operations tests: installed here when
# missing (as root).
APT_PROMETHEUS := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
  prometheus-alertmanager >/dev/null
prometheus:
	@{ command -v promtool && command -v prometheus-alertmanager; } >/dev/null || [ "$$(id -u)" != 0 ] || \
	  ! command -v apt-get >/dev/null || \
	  $(APT_PROMETHEUS) || { apt-get update -qq && $(APT_PROMETHEUS); }

test: lint browser prometheus
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Coverage-guided fuzzing of the event decoder (atheris, bench/fuzz_decode.py) for 60 s; findings go to runs/fuzz-decode/.
fuzz: install
	$(PIP) -e '.[fuzz]'
	$(BIN)/python bench/fuzz_decode.py --seconds 60

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .import_linter_cache
