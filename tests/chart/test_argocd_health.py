"""The chart's Argo CD health check (charts/ferry/argocd/health.lua), run the way Argo CD runs it.

Argo CD embeds gopher-lua (Lua 5.1 semantics); lupa's `lua51` runtime is the same language. Scripts pasted
into argocd-cm run without the string, math, io and os libraries unless an admin opts in, so those are
removed before the script runs: a script that needs them fails here, not in a user's Argo CD.
The cases are in Argo CD's resource_customizations format (testdata/argocd/health_test.yaml), ready
for an upstream contribution.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = (REPO / "charts" / "ferry" / "argocd" / "health.lua").read_text()
TESTDATA = Path(__file__).resolve().parent / "testdata" / "argocd"
CASES = yaml.safe_load((TESTDATA / "health_test.yaml").read_text())["tests"]
#: What Argo CD does not load for argocd-cm scripts (plus the file loaders), so the script must not use it.
UNAVAILABLE = ("io", "os", "string", "math", "debug", "dofile", "loadfile", "require")


def health(obj: dict[str, Any]) -> dict[str, str]:
    """Run health.lua on one CopyJob in a fresh Lua 5.1 state; return {status, message}."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua_globals = runtime.globals()
    for name in UNAVAILABLE:
        lua_globals[name] = None
    lua_globals.obj = runtime.table_from(obj, recursive=True)
    result = runtime.execute(SCRIPT)
    assert result is not None, "health.lua returned nothing"
    answer = dict(result.items())
    assert set(answer) <= {"status", "message"}, answer
    return {"status": answer["status"], "message": answer.get("message", "")}


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((TESTDATA / name).read_text())
    return document


@pytest.mark.parametrize("case", CASES, ids=[c["inputPath"].removesuffix(".yaml") for c in CASES])
def test_health_of_testdata(case: dict[str, Any]) -> None:
    assert health(load(case["inputPath"])) == case["healthStatus"]


def test_testdata_covers_every_outcome() -> None:
    statuses = {c["healthStatus"]["status"] for c in CASES}
    assert statuses == {"Healthy", "Degraded", "Suspended", "Progressing"}
    assert {c["inputPath"] for c in CASES} == {p.name for p in TESTDATA.glob("*.yaml")} - {"health_test.yaml"}


def test_spec_suspend_alone_means_suspended() -> None:
    obj = load("running.yaml")
    obj["spec"]["suspend"] = True
    assert health(obj) == {"status": "Suspended", "message": "CopyJob is suspended"}


def test_success_wins_over_suspend() -> None:
    obj = load("succeeded.yaml")
    obj["spec"]["suspend"] = True
    assert health(obj)["status"] == "Healthy"


def test_missing_observed_generation_is_stale() -> None:
    obj = load("succeeded.yaml")
    del obj["status"]["observedGeneration"]
    assert health(obj)["status"] == "Progressing"


def test_newer_observed_generation_is_not_stale() -> None:
    obj = load("succeeded.yaml")
    obj["status"]["observedGeneration"] = 2
    assert health(obj)["status"] == "Healthy"


def test_status_without_conditions_shows_the_phase() -> None:
    obj = load("no-status.yaml")
    obj["status"] = {"observedGeneration": 1, "phase": "Planning"}
    assert health(obj) == {"status": "Progressing", "message": "CopyJob is Planning"}


def test_condition_without_message_uses_reason() -> None:
    obj = copy.deepcopy(load("failed.yaml"))
    for condition in obj["status"]["conditions"]:
        condition["message"] = ""
    assert health(obj) == {"status": "Degraded", "message": "ObjectsFailed"}


def test_script_uses_only_the_base_library() -> None:
    # Belt and braces beside the nil-ed globals: no library call may hide in a branch the cases miss.
    for name in ("string.", "math.", "os.", "io.", ":format(", ":sub(", ":find(", ":match("):
        assert name not in SCRIPT, f"health.lua uses {name}, which argocd-cm scripts do not have"
