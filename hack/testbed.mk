# The testbed's targets; included by the main Makefile, which defines PY, VENV, BIN and venv.
# Binaries are built from the Go tool modules under hack/ into a cache outside the repository
# (hack/testbin.sh explains the layout).
.PHONY: testbin testbin-dir dev-cluster test-testbed

testbin:
	@hack/testbin.sh >/dev/null

# Prints only the bin directory (used as FERRY_TESTBIN=$$(make -s testbin-dir)); builds nothing.
testbin-dir:
	@hack/testbin.sh --print-dir

dev-cluster: venv testbin
	FERRY_TESTBIN=$$(hack/testbin.sh --print-dir) $(BIN)/python -m testbed.cluster $(DEV_CLUSTER_ARGS)

test-testbed: venv testbin
	FERRY_TESTBIN=$$(hack/testbin.sh --print-dir) $(BIN)/pytest tests/testbed $(PYTEST_ARGS)
