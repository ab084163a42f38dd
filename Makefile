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

# This clone's own settings for the demo and your commands: a secret key of its own, and plain
# HTTP on this machine (production is HTTPS by default and reads no .env: deploy/systemd/).
.env:
	@printf '%s\n' "# Made by make for this clone: a local demo on plain HTTP. Not for production (see deploy/systemd/)." \
	  "SECRET_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')" \
	  SECURE_SSL_REDIRECT=false SECURE_HSTS_SECONDS=0 SESSION_COOKIE_SECURE=false CSRF_COOKIE_SECURE=false > $@
	@echo "Wrote .env: a secret key for this clone, and plain HTTP for the demo."

# Metrics of every process (web, cluster, workers) meet in one directory, wiped at each start.
demo: export PROMETHEUS_MULTIPROC_DIR = $(CURDIR)/.prometheus
demo: $(BIN)/.installed .env
	rm -rf $(PROMETHEUS_MULTIPROC_DIR) && mkdir -p $(PROMETHEUS_MULTIPROC_DIR)
	$(BIN)/python manage.py demo --address http://$(ADDRESS)
	@echo "Serving the admin on http://$(ADDRESS)/admin/ (metrics on /metrics) with a task cluster beside it (Ctrl-C stops both)."
	$(BIN)/python manage.py qcluster & cluster=$$!; \
	trap 'kill $$cluster 2>/dev/null; wait $$cluster' EXIT; \
	$(BIN)/python manage.py runserver --insecure --noreload $(ADDRESS)

test: $(BIN)/.installed .env
	$(BIN)/pytest

bench: $(BIN)/.installed .env
	$(BIN)/python bench/sync_throughput.py

clean:
	rm -rf $(VENV) *.egg-info db.sqlite3* test-db.sqlite3*
