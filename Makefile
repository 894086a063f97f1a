# Loopline: the two commands are `make run` and `make test`; each sets itself up on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export GX_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements/pipeline.lock requirements/dev.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==0.13.8"
	@echo "installing the pipeline environment (.venv) from the lock files; log: $(VENV)/install.log"
	@$(BIN)/uv pip sync --compile-bytecode --python $(BIN)/python requirements/pipeline.lock requirements/dev.lock \
		> $(VENV)/install.log 2>&1 || { tail -40 $(VENV)/install.log; exit 1; }
	@$(BIN)/uv pip install --python $(BIN)/python --no-deps -e . >> $(VENV)/install.log 2>&1 \
		|| { tail -40 $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

# dvc plots show's page with the Vega libraries inlined (.dvc/config names it): plots draw offline
PLOTS_TEMPLATE := .dvc/plots/offline.html
$(PLOTS_TEMPLATE): | $(STAMP)
	@$(BIN)/loopline plots-template --out $@

venv: $(STAMP) $(PLOTS_TEMPLATE) ## create the pipeline environment (.venv) from the lock files

# Airflow lives in its own environment: it never imports the ML stack (tasks call .venv by absolute path).
AIRFLOW_VENV := .venv-airflow
AIRFLOW_BIN := $(CURDIR)/$(AIRFLOW_VENV)/bin
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed
$(AIRFLOW_STAMP): requirements/airflow.lock | $(STAMP)
	@test -x $(AIRFLOW_BIN)/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	@echo "installing the Airflow environment ($(AIRFLOW_VENV)) from its lock file; log: $(AIRFLOW_VENV)/install.log"
	@$(BIN)/uv pip sync --python $(AIRFLOW_BIN)/python requirements/airflow.lock > $(AIRFLOW_VENV)/install.log 2>&1 \
		|| { tail -40 $(AIRFLOW_VENV)/install.log; exit 1; }
	@touch $(AIRFLOW_STAMP)

airflow-venv: $(AIRFLOW_STAMP) ## create the Airflow environment (.venv-airflow)

airflow-up: venv airflow-venv ## start Airflow on 127.0.0.1 (SQLite, LocalExecutor); prints URL and password
	$(AIRFLOW_BIN)/python plugins/loopline_airflow_local.py up

airflow-down: ## stop the processes airflow-up started (by PID)
	$(AIRFLOW_BIN)/python plugins/loopline_airflow_local.py down

airflow-status: ## show the local Airflow's processes and health
	$(AIRFLOW_BIN)/python plugins/loopline_airflow_local.py status

test-dags: venv airflow-venv ## DAG, operator and live Airflow tests (in .venv-airflow)
	$(AIRFLOW_BIN)/pytest -q -p no:cacheprovider tests/dags

exp-show: venv ## dvc exp show without the code and data hash columns: metrics and the params each file sets
	$(BIN)/dvc exp show --drop '^(pipelines|data|models|reports)/'

run: venv ## generate the default data and run the whole pipeline with dvc repro
	@test -d .git || { echo "make run needs a git checkout (DVC tracks the pipeline in git)"; exit 1; }
	$(BIN)/dvc repro
	@$(BIN)/loopline summary

run-profile: venv ## run a profile end to end in runs/PROFILE: make run-profile PROFILE=hotel
	$(BIN)/loopline run --profile $(PROFILE)

test: venv airflow-venv ## run the test suite
	$(BIN)/pytest -n 2 --dist loadgroup -q
	$(AIRFLOW_BIN)/pytest -q -p no:cacheprovider tests/dags

test-fast: venv ## unit tests only
	$(BIN)/pytest -q -m "not slow and not live" tests/unit

lint: venv ## ruff, format check, mypy and the import contracts (pyproject.toml [tool.importlinter])
	$(BIN)/ruff check pipelines plugins dags tests benchmarks
	$(BIN)/ruff format --check pipelines plugins dags tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

graph: venv ## the package's import graph: layers, cycles, upward and function-local imports
	$(BIN)/python -m pipelines.devtools.import_graph

format: venv ## format the code
	$(BIN)/ruff format pipelines plugins dags tests benchmarks
	$(BIN)/ruff check --fix pipelines plugins dags tests benchmarks

bench: venv ## run every benchmark (writes benchmarks/results/*.json)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lock: ## recompile the lock files after editing requirements/*.in
	$(BIN)/uv pip compile requirements/pipeline.in -o requirements/pipeline.lock --python-version 3.11 --python-platform x86_64-unknown-linux-gnu
	$(BIN)/uv pip compile requirements/dev.in -o requirements/dev.lock --python-version 3.11 --python-platform x86_64-unknown-linux-gnu
	$(BIN)/uv pip compile requirements/airflow.in -o requirements/airflow.lock --python-version 3.11 --python-platform x86_64-unknown-linux-gnu

clean: ## remove generated data and reports (keeps the environment)
	rm -rf data/landing data/lake data/quarantine reports/* .dvc/tmp

.PHONY: exp-show graph airflow-venv airflow-up airflow-down airflow-status test-dags help venv run test test-fast lint format bench lock clean
