"""The CopyJob CRD against the pydantic model it mirrors, and the artefacts beside it (pure: no cluster).

`ferry run` validates with `ferry.model.copyjob`; the API server validates with `crds/copyjob.yaml`. These
tests keep the two in step: the same field names (camelCase) at every level, the same required fields,
types, enums, bounds and patterns, and a bounded length on every string (CEL cost estimation needs it).
"""

from __future__ import annotations

import re
import types
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import pytest
import yaml
from pydantic import BaseModel, BeforeValidator
from pydantic.fields import FieldInfo

from ferry.model import copyjob, crddoc
from ferry.model.copyjob import CopyJobSpec
from ferry.model.loading import load_job_file
from ferry.model.quantity import QUANTITY_SCHEMA_PATTERN, parse_bytes

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "crds" / "copyjob.yaml"
CHART_CRD_PATH = REPO / "charts" / "ferry" / "crds" / "copyjob.yaml"
REFERENCE_PATH = REPO / "docs" / "copyjob-reference.md"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return document


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    (only,) = crd["spec"]["versions"]
    result: dict[str, Any] = only
    return result


@pytest.fixture(scope="module")
def schema(version: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return result


# -- reading the pydantic model ---------------------------------------------------------------------


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """The type under Optional/Annotated, and the metadata collected on the way."""
    metadata: list[Any] = []
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            base, *extra = get_args(annotation)
            metadata.extend(extra)
            annotation = base
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation, metadata
            annotation = members[0]
        else:
            return annotation, metadata


def _bounds(metadata: list[Any]) -> dict[str, int]:
    found: dict[str, int] = {}
    flat: list[Any] = []
    for item in metadata:
        flat.extend(item.metadata if isinstance(item, FieldInfo) else [item])
    for item in flat:
        if isinstance(item, annotated_types.Ge):
            found["minimum"] = int(item.ge)  # type: ignore[call-overload]
        elif isinstance(item, annotated_types.Le):
            found["maximum"] = int(item.le)  # type: ignore[call-overload]
        elif isinstance(item, annotated_types.MinLen):
            found["minLength"] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            found["maxLength"] = item.max_length
    return found


def _is_byte_size(metadata: list[Any]) -> bool:
    return any(isinstance(m, BeforeValidator) and m.func is copyjob._bytes for m in metadata)


def _check_model(model: type[BaseModel], node: dict[str, Any], path: str) -> None:
    assert node.get("type") == "object", f"{path}: expected an object"
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    declared = set(node.get("properties", {}))
    assert declared == set(fields), (
        f"{path}: CRD properties differ from {model.__name__}: "
        f"only in CRD {sorted(declared - set(fields))}, only in model {sorted(set(fields) - declared)}"
    )
    required = {alias for alias, f in fields.items() if f.is_required()}
    assert set(node.get("required", [])) == required, f"{path}: required fields differ"
    for alias, field in fields.items():
        _check_field(field.annotation, list(field.metadata), node["properties"][alias], f"{path}.{alias}")


def _check_field(annotation: Any, metadata: list[Any], node: dict[str, Any], path: str) -> None:
    base, more = _unwrap(annotation)
    metadata = metadata + more
    if node.get("x-kubernetes-int-or-string"):
        assert node.get("anyOf") == [{"type": "integer"}, {"type": "string"}], path
        if _is_byte_size(metadata):
            assert node["pattern"] == QUANTITY_SCHEMA_PATTERN, f"{path}: not the quantity pattern"
            assert node.get("minimum") == 0, f"{path}: byte sizes are never negative"
        return
    if isinstance(base, type) and issubclass(base, BaseModel):
        _check_model(base, node, path)
    elif isinstance(base, type) and issubclass(base, Enum):
        assert node["enum"] == [e.value for e in base], f"{path}: enum differs from {base.__name__}"
    elif get_origin(base) is Literal:
        assert node["enum"] == list(get_args(base)), f"{path}: enum differs"
    elif base is bool:
        assert node["type"] == "boolean", path
    elif base is int:
        assert not _is_byte_size(metadata), f"{path}: a byte size must be x-kubernetes-int-or-string"
        assert node["type"] == "integer", path
        bounds = _bounds(metadata)
        assert {k: node.get(k) for k in bounds} == bounds, f"{path}: bounds differ from the model"
    elif base is datetime:
        assert (node["type"], node.get("format")) == ("string", "date-time"), path
    elif get_origin(base) is tuple:
        assert node["type"] == "array", path
        item, _ = _unwrap(get_args(base)[0])
        assert item is str and node["items"]["type"] == "string", path
    elif base is str:
        assert node["type"] == "string", path
        bounds = _bounds(metadata)
        assert {k: node.get(k) for k in bounds} == bounds, f"{path}: length bounds differ from the model"
    else:  # pragma: no cover - a new kind of field: teach this test about it
        pytest.fail(f"{path}: no rule for the model type {base!r}")


def test_spec_mirrors_the_pydantic_model(schema: dict[str, Any]) -> None:
    _check_model(CopyJobSpec, schema["properties"]["spec"], "spec")


# -- schema hygiene ---------------------------------------------------------------------------------


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, child in node.get("properties", {}).items():
        found.extend(_walk(child, f"{path}.{name}"))
    if "items" in node:
        found.extend(_walk(node["items"], f"{path}[]"))
    return found


def test_every_string_has_a_max_length(schema: dict[str, Any]) -> None:
    unbounded = [
        path
        for path, node in _walk(schema)
        if (node.get("type") == "string" or node.get("x-kubernetes-int-or-string"))
        and "maxLength" not in node
    ]
    assert unbounded == []


def test_every_list_has_max_items(schema: dict[str, Any]) -> None:
    assert [p for p, n in _walk(schema) if n.get("type") == "array" and "maxItems" not in n] == []


def test_no_preserve_unknown_fields(schema: dict[str, Any]) -> None:
    assert [p for p, n in _walk(schema) if n.get("x-kubernetes-preserve-unknown-fields")] == []


def test_bucket_and_quantity_patterns_match_the_model(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]["properties"]
    for side in ("source", "destination", "report"):
        bucket = spec[side]["properties"]["bucket"]
        assert bucket["pattern"] == "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
        assert bucket["maxLength"] == copyjob.MAX_BUCKET_LENGTH
        # The same strings as the model's: what the API server admits is what botocore accepts.
        assert spec[side]["properties"]["endpoint"]["pattern"] == copyjob.ENDPOINT_PATTERN
        assert spec[side]["properties"]["region"]["pattern"] == copyjob.REGION_PATTERN
        assert spec[side]["properties"]["region"]["maxLength"] == copyjob.MAX_REGION_LENGTH
    pattern = re.compile(QUANTITY_SCHEMA_PATTERN)
    for text in ("100Ki", "4Mi", "5Gi", "1e6", "1500", "+1", "0.5Ki"):
        assert pattern.match(text), text
    for text in ("-1", "1KB", "Mi", "1 Mi", "1.5.2"):
        assert not pattern.match(text), text
    assert parse_bytes("1e6") == 1_000_000


def test_the_name_and_filter_limits_are_the_model_s(schema: dict[str, Any]) -> None:
    name = schema["properties"]["metadata"]["properties"]["name"]
    assert name["x-kubernetes-validations"][0]["rule"] == f"self.size() <= {copyjob.MAX_NAME_LENGTH}"
    filter_rules = schema["properties"]["spec"]["properties"]["filter"]["x-kubernetes-validations"]
    assert any(f"<= {copyjob.MAX_FILTER_CHARACTERS}" in r["rule"] for r in filter_rules)
    endpoint = schema["properties"]["spec"]["properties"]["source"]["properties"]["endpoint"]
    assert f"<= {copyjob.MAX_HOSTNAME_LENGTH}" in endpoint["x-kubernetes-validations"][0]["rule"]


def test_status_declares_conditions_as_a_map(schema: dict[str, Any]) -> None:
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert set(item["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"


def test_status_declares_what_the_operator_writes(schema: dict[str, Any]) -> None:
    status = schema["properties"]["status"]["properties"]
    assert set(status) == {
        "observedGeneration",
        "phase",
        "conditions",
        "startTime",
        "completionTime",
        "objects",
        "bytes",
        "throughput",
        "durationSeconds",
        "progressPercent",
        "eta",
        "etaSeconds",
        "plan",
        "scaling",
        "workers",
        "concurrency",
        "rateLimit",
        "memory",
        "failedObjects",
        "archived",
        "versions",
        "report",
        "evidence",
        "lastProgressTime",
        "sync",
    }
    assert set(status["objects"]["properties"]) == {"total", "copied", "skipped", "failed", "pending"}
    # The rate now, the average over the running time, and when the running time was last advanced.
    assert set(status["throughput"]["properties"]) == {
        "objectsPerSecond",
        "bytesPerSecond",
        "averageObjectsPerSecond",
        "averageBytesPerSecond",
        "sampledAt",
    }
    assert status["phase"]["enum"] == [
        "Pending",
        "Planning",
        "Planned",
        "Running",
        "Suspended",
        "Succeeded",
        "Failed",
    ]
    assert status["failedObjects"]["maxItems"] == 20
    failed_fields = set(status["failedObjects"]["items"]["properties"])
    assert failed_fields == {"key", "code", "message", "size", "version"}
    # spec.versions all: what the objects counts (of versions) do not say.
    assert set(status["versions"]["properties"]) == {"keys", "deleteMarkersCopied", "divergedKeys"}
    assert status["concurrency"]["properties"]["perPod"]["maxItems"] == 1000
    # Memory in bytes for programs, and rounded (74.1Mi) for people, beside the limit it is compared with.
    assert set(status["memory"]["properties"]) == {"limit", "peakBytes", "peak", "peakSource"}


def test_names_and_subresources(crd: dict[str, Any], version: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "copyjobs.ferry.dev"
    assert (spec["group"], spec["scope"], version["name"]) == ("ferry.dev", "Namespaced", "v1alpha1")
    assert spec["names"]["kind"] == copyjob.KIND
    # Not "cj": kubectl resolves that to CronJobs.
    assert (spec["names"]["plural"], spec["names"]["shortNames"]) == ("copyjobs", ["cpj"])
    assert version["subresources"] == {"status": {}}
    assert version["served"] and version["storage"]


def _resolve(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    """The schema node a printer column's JSONPath points at (None when it is not declared)."""
    node: dict[str, Any] | None = schema
    for part in re.findall(r"\.([A-Za-z]+)(\[[^\]]*\])?", json_path):
        name, index = part
        if node is None or name not in node.get("properties", {}):
            return None
        node = node["properties"][name]
        if index:
            node = node.get("items")
    return node


def test_printer_columns_reference_declared_fields(schema: dict[str, Any], version: dict[str, Any]) -> None:
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns) == [
        "Phase",
        "Reason",
        "Progress",
        "Copied",
        "Total",
        "Obj/s",
        "ETA",
        "Age",
        "Source",
        "Destination",
        "Message",
    ]
    json_types = {"integer": "integer", "number": "number", "string": "string", "boolean": "boolean"}
    for name, column in columns.items():
        if column["jsonPath"].startswith(".metadata."):
            continue
        node = _resolve(schema, column["jsonPath"])
        assert node is not None, f"column {name}: {column['jsonPath']} is not declared in the schema"
        assert json_types[node["type"]] == column["type"], f"column {name}: type differs from the schema"
    assert all(columns[n].get("priority") == 1 for n in ("Source", "Destination", "Message"))
    assert all(c.get("description") for c in columns.values()), "every column says what it shows"


def test_the_reason_column_is_shown_by_default(version: dict[str, Any]) -> None:
    """`kubectl get cpj` shows why a job is stalled or failed, not only `Pending`/`Failed`."""
    (reason,) = [c for c in version["additionalPrinterColumns"] if c["name"] == "Reason"]
    assert reason["jsonPath"] == '.status.conditions[?(@.type=="Succeeded")].reason'
    assert reason.get("priority", 0) == 0


# -- descriptions: one source, the model; and the reference page -------------------------------------


def test_spec_descriptions_are_the_model_s(schema: dict[str, Any]) -> None:
    """`kubectl explain` prints the CRD's descriptions; they are the model's Field descriptions, word for word."""
    crd = {
        path: node.get("description")
        for path, node, _ in crddoc.schema_fields(schema["properties"]["spec"], "spec")
    }
    crd["spec"] = schema["properties"]["spec"].get("description")
    model = crddoc.model_descriptions()
    assert set(crd) == set(model)
    differing = {path: text for path, text in model.items() if crd[path] != text}
    assert differing == {}, (
        "these CRD descriptions differ from ferry/model/copyjob.py; put the model's text in crds/copyjob.yaml "
        "(and its chart copy), then regenerate docs/copyjob-reference.md"
    )


def test_every_spec_and_status_field_is_described(schema: dict[str, Any]) -> None:
    undescribed = [
        path
        for part in ("spec", "status")
        for path, node, _ in crddoc.schema_fields(schema["properties"][part], part)
        if len(str(node.get("description", "")).split()) < 2
    ]
    assert undescribed == []
    assert "See ferry/model" not in schema["properties"]["spec"]["description"]


def test_ttl_says_the_copyjob_is_kept(schema: dict[str, Any]) -> None:
    text = schema["properties"]["spec"]["properties"]["ttlSecondsAfterFinished"]["description"]
    assert "the CopyJob and its status are kept" in text and "Job and pods are deleted" in text


def test_reference_page_is_up_to_date(crd: dict[str, Any]) -> None:
    assert REFERENCE_PATH.read_text() == crddoc.reference(crd), (
        "docs/copyjob-reference.md is stale; regenerate it: python -m ferry.model.crddoc > docs/copyjob-reference.md"
    )


def test_reference_page_lists_every_field_with_its_default(
    crd: dict[str, Any], schema: dict[str, Any]
) -> None:
    page = crddoc.reference(crd)
    for part in ("spec", "status"):
        for path, _, _ in crddoc.schema_fields(schema["properties"][part], part):
            assert f"| `{path}` |" in page, path
    assert "| `spec.concurrency.max` | integer |  | `512` | 1-4096 |" in page
    assert '| `spec.overwrite` | string |  | `"ifDifferent"` |' in page


# -- the chart's copy and the examples --------------------------------------------------------------


def test_chart_copy_of_the_crd_is_identical() -> None:
    assert CHART_CRD_PATH.read_bytes() == CRD_PATH.read_bytes(), (
        "charts/ferry/crds/copyjob.yaml drifted from crds/copyjob.yaml; copy it: "
        "cp crds/copyjob.yaml charts/ferry/crds/copyjob.yaml"
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_load_with_the_model(path: Path) -> None:
    job = load_job_file(path)
    for location in (job.copyjob.spec.source, job.copyjob.spec.destination):
        if location.credentials_secret:
            assert location.credentials_secret in job.secrets, f"{path.name}: Secret not in the file"


def test_the_four_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"cross-provider.yaml", "server-side.yaml", "dry-run.yaml", "rate-limited.yaml"} <= names
