#!/usr/bin/env bash
# `make test`'s runner: builds (or reuses) the image ferry:dev, runs pytest, and says in the last line
# when the container-mode tests could not run here. Usage: hack/test.sh PYTEST [ARGS...]
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

FERRY_TESTBIN=$("$HERE/testbin.sh" --print-dir)
export FERRY_TESTBIN

# An engine this run started is stopped at the end; one that was already running is left as it was.
was_running=0
"$HERE/engine.sh" env >/dev/null 2>&1 && was_running=1
status=$(mktemp)
"$HERE/engine.sh" image >/dev/null 2>"$status"
rc=$?
case $rc in
0) unset FERRY_ENGINE_UNAVAILABLE ;;
3) FERRY_ENGINE_UNAVAILABLE=$(tail -n 1 "$status" | sed 's/^engine: unavailable: //')
   export FERRY_ENGINE_UNAVAILABLE ;;
*) cat "$status" >&2; rm -f "$status"; echo "make test: the image did not build" >&2; exit 1 ;;
esac
rm -f "$status"

"$@"
rc=$?
if [[ $was_running == 0 && -z ${FERRY_ENGINE_UNAVAILABLE:-} ]]; then "$HERE/engine.sh" stop 2>/dev/null; fi
if [[ -n ${FERRY_ENGINE_UNAVAILABLE:-} ]]; then
	echo "make test: container-mode tests SKIPPED (no container engine here): $FERRY_ENGINE_UNAVAILABLE"
fi
exit $rc
