"""The EndpointBudget CRD against the model it mirrors (ferry/model/endpointbudget.py), and the chart's copy
of it (pure: no cluster). The API server's own checks of it (CEL rules) run in tests/testbed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ferry.model import copyjob
from ferry.model.endpointbudget import (
    BUDGET_KIND,
    BUDGET_PLURAL,
    MAX_BUDGET_BYTES_PER_SECOND,
    MAX_BUDGET_REQUESTS_PER_SECOND,
    EndpointBudgetSpec,
)

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "crds" / "endpointbudget.yaml"
CHART_CRD_PATH = REPO / "charts" / "ferry" / "crds" / "endpointbudget.yaml"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return document


@pytest.fixture(scope="module")
def spec_schema(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    result: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return result


def test_chart_copy_of_the_budget_crd_is_identical() -> None:
    assert CHART_CRD_PATH.read_bytes() == CRD_PATH.read_bytes(), (
        "charts/ferry/crds/endpointbudget.yaml drifted from crds/endpointbudget.yaml; copy it: "
        "cp crds/endpointbudget.yaml charts/ferry/crds/endpointbudget.yaml"
    )


def test_the_budget_is_cluster_scoped_with_a_status_subresource(crd: dict[str, Any]) -> None:
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["kind"] == BUDGET_KIND
    assert crd["spec"]["names"]["plural"] == BUDGET_PLURAL
    assert crd["metadata"]["name"] == f"{BUDGET_PLURAL}.{copyjob.API_GROUP}"
    (version,) = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}


def test_the_crd_has_the_model_s_fields_descriptions_and_bounds(spec_schema: dict[str, Any]) -> None:
    fields = EndpointBudgetSpec.model_fields
    properties = spec_schema["properties"]
    assert set(properties) == {info.alias for info in fields.values()}
    for info in fields.values():
        description = " ".join(properties[info.alias]["description"].split())
        assert description == info.description, info.alias
    assert spec_schema["required"] == ["endpoint"]
    assert properties["endpoint"]["pattern"] == copyjob.ENDPOINT_PATTERN
    assert properties["requestsPerSecond"]["maximum"] == MAX_BUDGET_REQUESTS_PER_SECOND
    assert properties["bytesPerSecond"]["maximum"] == MAX_BUDGET_BYTES_PER_SECOND


def test_every_string_of_the_budget_crd_is_bounded(crd: dict[str, Any]) -> None:
    """CEL cost estimation needs a bound on every string a rule reads."""

    def strings(node: dict[str, Any], path: str) -> list[str]:
        found = []
        if node.get("type") == "string" and "maxLength" not in node:
            found.append(path)
        for name, child in (node.get("properties") or {}).items():
            found += strings(child, f"{path}.{name}")
        return found

    (version,) = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    assert strings(schema["properties"]["spec"], "spec") == []
    assert strings(schema["properties"]["status"], "status") == []
