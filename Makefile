# QueryForge developer tasks. `make help` lists them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup demo test lint typecheck unit bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@# The Spark engine needs a Java runtime (17+): Debian's, installed when missing.
	command -v java >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless)
	@# Its JDBC reads and staging loads need the PostgreSQL and MariaDB drivers: Debian's jars, installed when missing.
	test -f /usr/share/java/postgresql.jar -a -f /usr/share/java/mariadb-java-client.jar || (apt-get update -qq && apt-get install -y -qq --no-install-recommends libpostgresql-jdbc-java libmariadb-java)
	@# Browser tests drive Debian's Chromium with Playwright (no browser download).
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install QueryForge with its dev tools

demo: $(STAMP) ## install, create ./demo and run the example pipelines (sandbox, commit, publish)
	rm -rf demo
	$(BIN)/queryforge init demo
	cd demo && ../$(BIN)/queryforge validate pipelines/daily_sales.yaml
	cd demo && ../$(BIN)/queryforge run pipelines/daily_sales.yaml --sandbox
	cd demo && ../$(BIN)/queryforge runs show
	cd demo && ../$(BIN)/queryforge commit
	cd demo && ../$(BIN)/queryforge run pipelines/customers_clean.yaml
	cd demo && ../$(BIN)/queryforge run pipelines/product_report.yaml
	cd demo && ../$(BIN)/queryforge runs list

lint: $(STAMP) ## ruff (lint and format check)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy over src/queryforge
	$(BIN)/mypy

test: lint typecheck ## install, lint, type-check and run the whole test suite
	$(BIN)/pytest -n 2 -q --durations=20

unit: $(STAMP) ## only the fast unit tests
	$(BIN)/pytest -q tests/unit

bench: $(STAMP) ## benchmarks with ratios against raw baselines (not part of the tests)
	$(BIN)/python -m bench

clean: ## remove the virtualenv and the demo workspace
	rm -rf $(VENV) demo

.PHONY: eval-planner
eval-planner: $(STAMP) ## score the planner: paraphrase families per shape and kind, must-ask, dev
	$(BIN)/python -m tests.planner_eval.score -j 2
