# The commands the README names. Every target does its own set-up: a fresh clone needs nothing
# installed by hand beyond Python 3.11 and Go.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml testbed/pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: help venv demo test test-unit test-integration test-reliability lint typecheck bench bench-smoke bench-load clean

help:
	@echo "make demo       copy a few thousand objects between two buckets of a local S3 server"
	@echo "make test       lint, types, unit, integration and testbed tests"
	@echo "make testbin    build the testbed's binaries from Go modules (cached outside the repo)"
	@echo "make dev-cluster  run a local control plane + S3 server until interrupted"
	@echo "make test-reliability  the fault, bad-input, load and secrecy suites only"
	@echo "make bench      ferry against rclone, s5cmd and the AWS CLI (figures in bench/results)"
	@echo "make bench-load 50 CopyJobs at once against one operator (figures in bench/results)"
	@echo "make bench-list listing speed: ferry plan against rclone, s5cmd and the AWS CLI behind 50 ms per request"

$(STAMP): pyproject.toml testbed/pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip 'setuptools>=77' wheel
	$(BIN)/pip install -q -e '.[dev]' -e ./testbed
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

demo: venv
	$(BIN)/python -m testbed.demo

lint: venv
	$(BIN)/ruff check --output-format concise .
	$(BIN)/ruff format --check .

# mypy cannot follow the editable install's mapping of operator/ and worker/ to ferry.operator and
# ferry.worker, so it checks a tree of links laid out as the installed package.
STRICT := ferry/model $(addprefix ferry/operator/,budgets.py planning.py sizing.py render.py aggregate.py conditions.py settings.py ledger.py ownership.py planfile.py policy.py stopped.py edits.py planresult.py plannerstate.py plannerjob.py ratesplit.py accounting.py cost.py planview.py caps.py fleet.py fleetstatus.py archivestatus.py restorewait.py notifyjob.py syncphase.py suspension.py versionstatus.py) $(addprefix ferry/worker/,limits.py globs.py progress.py decide.py filters.py \
	keys.py parts.py objects.py ratelimit.py retry.py checksums.py listing.py control.py budget.py adaptive.py systematic.py settled.py manifest.py manifestplan.py manifestbatch.py keyspace.py prefixlimits.py evidence.py preserve.py syncdeletes.py shardsync.py archive.py archivesummary.py handoff.py versions.py versionsummary.py versionevidence.py)
typecheck: venv
	@rm -rf .typecheck && mkdir -p .typecheck/ferry && cp -rs $(CURDIR)/ferry/. .typecheck/ferry/
	@ln -s $(CURDIR)/worker .typecheck/ferry/worker && ln -s $(CURDIR)/operator .typecheck/ferry/operator
	cd .typecheck && ../$(BIN)/mypy --config-file ../pyproject.toml --strict $(STRICT)
	cd .typecheck && ../$(BIN)/mypy --config-file ../pyproject.toml ferry

test-unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: venv
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

# The image is built (or reused) first: the container-mode tests run it under real memory limits. Where no
# engine can run, they skip with the reason, and the last line of `make test` repeats it.
test: venv lint typecheck testbin
	@hack/test.sh $(BIN)/pytest $(PYTEST_ARGS)

# What proves Ferry loses nothing and leaks nothing: S3 faults on both sides, destinations lost mid-run,
# worker pods and the operator killed, bad input at apply time and in files, planted secrets.
test-reliability: venv testbin
	FERRY_TESTBIN=$$($(MAKE) -s testbin-dir) $(BIN)/pytest tests/integration/test_copy_under_faults.py \
		tests/integration/test_ferry_run.py tests/testbed/test_operator.py tests/testbed/test_crd_apply.py \
		tests/testbed/test_control_plane_faults.py tests/testbed/test_hostile_copyjobs.py \
		tests/testbed/test_load.py tests/unit/test_loading.py tests/unit/test_preflight.py \
		tests/unit/test_model_admission.py tests/unit/test_operator_ownership.py tests/unit/test_operator_pass.py \
		tests/testbed/test_hostile_tenants.py tests/integration/test_operator_network_bounds.py \
		tests/unit/test_operator_policy.py tests/unit/test_globs.py tests/unit/test_retry.py \
		tests/unit/test_credentials.py tests/unit/test_planner_answers.py tests/integration/test_planner_pod.py \
		tests/testbed/test_fair_share.py tests/testbed/test_operator_least_privilege.py \
		tests/testbed/test_workload_identity_selector.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

-include hack/testbed.mk
-include hack/engine.mk
-include bench/bench.mk
