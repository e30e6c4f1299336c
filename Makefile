# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install preview bench clean-data

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/daydream run demo
	$(BIN)/daydream run demo-rubrics

test: $(BIN)/.installed
	./scripts/install-chromium.sh
	$(BIN)/pytest -n 2 --dist loadgroup -q; rc=$$?; if [ $$rc -eq 5 ]; then echo 'pytest collected no tests' >&2; exit 1; fi; exit $$rc

preview: $(BIN)/.installed
	$(BIN)/daydream preview

bench: $(BIN)/.installed
	for b in bench/*.py; do $(BIN)/python $$b; done

clean-data:
	rm -rf data/gens data/site data/reports data/cohorts/*/membership.csv data/cohorts/*/manifest.json data/cohorts/*/reports
