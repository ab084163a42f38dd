# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
ADDRESS ?= 127.0.0.1:8000

.PHONY: demo test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

# Metrics of every process (web, cluster, workers) meet in one directory, wiped at each start.
demo: export PROMETHEUS_MULTIPROC_DIR = $(CURDIR)/.prometheus
demo: $(BIN)/.installed
	rm -rf $(PROMETHEUS_MULTIPROC_DIR) && mkdir -p $(PROMETHEUS_MULTIPROC_DIR)
	$(BIN)/python manage.py demo --address http://$(ADDRESS)
	@echo "Serving the admin on http://$(ADDRESS)/admin/ (metrics on /metrics) with a task cluster beside it (Ctrl-C stops both)."
	$(BIN)/python manage.py qcluster & cluster=$$!; \
	trap 'kill $$cluster 2>/dev/null; wait $$cluster' EXIT; \
	$(BIN)/python manage.py runserver --insecure --noreload $(ADDRESS)

test: $(BIN)/.installed
	$(BIN)/pytest

bench: $(BIN)/.installed
	$(BIN)/python bench/sync_throughput.py

clean:
	rm -rf $(VENV) *.egg-info db.sqlite3* test-db.sqlite3*
