# The benchmark's targets; included by the main Makefile (`-include bench/bench.mk`), which defines
# BIN, venv and testbin. Peers that are missing are skipped with a note, never a failure.
# The AWS CLI and matplotlib go into the bench's own venvs in the cache, never into .venv.
BENCH_CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/ferry
BENCH_PY ?= python3

.PHONY: bench bench-smoke bench-incident bench-small bench-tools bench-load bench-list bench-list-smoke bench-budget bench-prefix bench-budget-fleet bench-cpus

# Best effort: a failed install only means those runs (or the plots) are skipped with a note.
bench-tools:
	@test -x $(BENCH_CACHE)/bench-awscli/bin/aws || { $(BENCH_PY) -m venv $(BENCH_CACHE)/bench-awscli && \
		$(BENCH_CACHE)/bench-awscli/bin/pip install -q awscli; } || echo "bench: AWS CLI not installed; aws-cli runs will be skipped"
	@test -x $(BENCH_CACHE)/bench-plot/bin/python && $(BENCH_CACHE)/bench-plot/bin/python -c 'import matplotlib' 2>/dev/null || \
		{ $(BENCH_PY) -m venv $(BENCH_CACHE)/bench-plot && $(BENCH_CACHE)/bench-plot/bin/pip install -q matplotlib; } || \
		echo "bench: matplotlib not installed; plots will be skipped"

bench: venv testbin bench-tools
	FERRY_TESTBIN=$$($(MAKE) -s testbin-dir) $(BIN)/python bench/run.py

# Small sizes and short caps: under 3 minutes on 2 cores.
bench-smoke: venv bench-tools
	BENCH_SMOKE=1 FERRY_TESTBIN=$$($(MAKE) -s testbin-dir) $(BIN)/python bench/run.py

# The incident's memory manager against ferry's, both in containers of the incident pod's 1.8 GiB
# (BENCH_CONTAINERS=auto: on the host, with a note, where the engine cannot run). Its own results folder,
# so it never replaces the full benchmark's latest.{json,md}.
bench-incident: venv testbin
	BENCH_RESULTS_DIR=$${BENCH_RESULTS_DIR:-bench/results/incident} BENCH_SCENARIOS=incident BENCH_TOOLS=incident-policy,ferry-adaptive FERRY_TESTBIN=$$($(MAKE) -s testbin-dir) $(BIN)/python bench/run.py

# Small objects alone (10 KB and 100 KB, no added latency and 50 ms): ferry streamed and server-side
# against rclone, s5cmd and the AWS CLI, CPU per object and objects/s (bench/README.md, "Where the CPU goes
# per small object"). Its own results folder, like bench-incident.
bench-small: venv testbin bench-tools
	BENCH_RESULTS_DIR=$${BENCH_RESULTS_DIR:-bench/results/small-objects} BENCH_SCENARIOS=small-objects FERRY_TESTBIN=$$($(MAKE) -s testbin-dir) $(BIN)/python bench/run.py

# Objects/s by CPUs given: ferry in the image in containers of 1 and 2 CPUs (--processes auto) against
# hack/nulls3, a near-zero-CPU endpoint, so Ferry's own CPU bounds the copy (bench/cpuscale.py).
bench-cpus: venv
	$(BIN)/python bench/cpuscale.py --objects $${BENCH_CPU_OBJECTS:-20000} --size $${BENCH_CPU_SIZE:-10KB} --runs $${BENCH_CPU_RUNS:-3}

# The operator under load: 50 CopyJobs × 2,000 objects, two waves (about 15 minutes on 2 cores).
bench-load: venv testbin
	FERRY_TESTBIN=$$($(MAKE) -s testbin-dir) $(BIN)/python bench/load.py

# Listing speed: Ferry's planner against rclone, s5cmd and the AWS CLI on one seeded bucket behind 50 ms
# per request (bench/README.md, "Listing"). Buckets are seeded once into $(BENCH_CACHE)/bench-list.
# BENCH_LIST_KEYS=100000,1000000 adds the million-key buckets (see the README for how long they take).
bench-list: venv testbin bench-tools
	FERRY_TESTBIN=$$($(MAKE) -s testbin-dir) $(BIN)/python bench/listing.py

# 20,000 keys per layout: under a minute; results in bench/results/list-smoke.{json,md}.
bench-list-smoke: venv bench-tools
	BENCH_LIST_SMOKE=1 FERRY_TESTBIN=$$($(MAKE) -s testbin-dir) $(BIN)/python bench/listing.py

# Endpoint budgets: five `ferry run` copies through one endpoint capped at 100 requests/s, each with its
# share of a budget of 100, then each on its own (bench/budget.py; about 5 minutes on 2 cores). Results in
# bench/results/budget-latest.{json,md}.
bench-budget: venv testbin
	FERRY_TESTBIN=$$($(MAKE) -s testbin-dir) $(BIN)/python bench/budget.py

# Per-prefix throttling: one engine copies a capped prefix and an uncapped one, with per-prefix pacing and
# without (bench/prefix_throttle.py; about a minute). Results in bench/results/prefix-throttle-latest.*.
bench-prefix: venv testbin
	FERRY_TESTBIN=$$($(MAKE) -s testbin-dir) $(BIN)/python bench/prefix_throttle.py

# Endpoint budgets on the testbed: five CopyJobs through one throttling endpoint, with and without an
# EndpointBudget, run by the operator process and the process kubelet (about 5 minutes).
bench-budget-fleet: venv testbin
	FERRY_TESTBIN=$$($(MAKE) -s testbin-dir) $(BIN)/pytest tests/testbed/bench_budget_fleet.py -q -s -p no:logging
