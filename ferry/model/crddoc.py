"""The CopyJob reference page, written from the CRD's schema and the model's field descriptions. Pure.

The spec's descriptions have one source, the ``Field(description=...)`` of ``ferry.model.copyjob``:
the CRD (``crds/copyjob.yaml``, what ``kubectl explain`` prints) carries the same strings, which
``tests/chart/test_crd_schema.py`` checks. Status exists only in the CRD, so its descriptions live there.
``docs/copyjob-reference.md`` is this module's output; regenerate it after changing either::

    python -m ferry.model.crddoc > docs/copyjob-reference.md
"""

from __future__ import annotations

import json
import sys
import types
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from ferry.model.copyjob import CopyJobSpec

CRD_PATH = Path("crds") / "copyjob.yaml"
REFERENCE_PATH = Path("docs") / "copyjob-reference.md"
#: Patterns longer than this are left to the CRD; the reference names the rule instead.
_SHORT_PATTERN = 60


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model under Optional/Annotated, or None for a plain value."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return None
            annotation = members[0]
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
        else:
            return None


def model_descriptions(model: type[BaseModel] = CopyJobSpec, path: str = "spec") -> dict[str, str]:
    """Every field's description, keyed by its dotted camelCase path (``spec.source.bucket``); ``spec``
    itself is described by the model's docstring."""
    found: dict[str, str] = {path: " ".join((model.__doc__ or "").split())} if path == "spec" else {}
    for name, field in model.model_fields.items():
        where = f"{path}.{field.alias or name}"
        found[where] = field.description or ""
        inner = _model_of(field.annotation)
        if inner is not None:
            found.update(model_descriptions(inner, where))
    return found


def model_defaults(model: type[BaseModel] = CopyJobSpec, path: str = "spec") -> dict[str, str]:
    """The default of every optional scalar field, as a user would write it."""
    found: dict[str, str] = {}
    for name, field in model.model_fields.items():
        where = f"{path}.{field.alias or name}"
        inner = _model_of(field.annotation)
        if inner is not None:
            found.update(model_defaults(inner, where))
            continue
        default = field.default
        if default is PydanticUndefined or default is None or default == ():
            continue
        value = default.value if isinstance(default, Enum) else default
        found[where] = json.dumps(value)
    return found


def schema_fields(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any], bool]]:
    """(path, schema node, required) for ``node`` and every field under it, depth first."""
    rows: list[tuple[str, dict[str, Any], bool]] = []
    required = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        where = f"{path}.{name}"
        rows.append((where, child, name in required))
        if "properties" in child:
            rows.extend(schema_fields(child, where))
        elif "properties" in child.get("items", {}):
            rows.extend(schema_fields(child["items"], f"{where}[]"))
    return rows


def _type(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "integer or string"
    kind = str(node.get("type", ""))
    if kind == "array":
        return f"array of {_type(node.get('items', {}))}"
    if node.get("format") == "date-time":
        return "string (date-time)"
    return kind


def _limits(node: dict[str, Any]) -> str:
    parts: list[str] = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    if "minimum" in node and "maximum" in node:
        parts.append(f"{node['minimum']}-{node['maximum']}")
    elif "minimum" in node:
        parts.append(f"at least {node['minimum']}")
    if "minLength" in node:
        parts.append(f"{node['minLength']}-{node.get('maxLength', '')} characters")
    elif "maxLength" in node and "enum" not in node:
        parts.append(f"at most {node['maxLength']} characters")
    if "maxItems" in node:
        parts.append(f"at most {node['maxItems']} items")
    pattern = node.get("pattern")
    if pattern and len(pattern) <= _SHORT_PATTERN:
        parts.append(f"pattern `{pattern}`")
    elif pattern:
        parts.append("pattern: see the CRD")
    if node.get("x-kubernetes-validations"):
        parts.append("; ".join(str(v["message"]).strip() for v in node["x-kubernetes-validations"]))
    return "; ".join(parts)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _table(
    rows: list[tuple[str, dict[str, Any], bool]], defaults: dict[str, str], with_defaults: bool
) -> list[str]:
    header = (
        "| Field | Type | Required | Default | Limits | Description |"
        if with_defaults
        else ("| Field | Type | Description |")
    )
    lines = [header, "| --- | --- | --- | --- | --- | --- |" if with_defaults else "| --- | --- | --- |"]
    for path, node, required in rows:
        name = f"`{path}`"
        description = _cell(str(node.get("description", "")))
        if with_defaults:
            default = f"`{defaults[path]}`" if path in defaults else ""
            lines.append(
                f"| {name} | {_type(node)} | {'yes' if required else ''} | {_cell(default)} "
                f"| {_cell(_limits(node))} | {description} |"
            )
        else:
            lines.append(f"| {name} | {_type(node)} | {description} |")
    return lines


def reference(crd: dict[str, Any]) -> str:
    """The Markdown reference page of a CopyJob CRD."""
    (version,) = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    names = crd["spec"]["names"]
    spec, status = schema["properties"]["spec"], schema["properties"]["status"]
    lines = [
        "<!-- Generated by `python -m ferry.model.crddoc > docs/copyjob-reference.md` from crds/copyjob.yaml",
        "     and ferry/model/copyjob.py; tests/chart/test_crd_schema.py checks it is up to date. -->",
        "",
        f"# {names['kind']} reference (`{crd['spec']['group']}/{version['name']}`)",
        "",
        f"Short name `{'`, `'.join(names.get('shortNames', []))}`. "
        f"{_cell(str(schema.get('description', '')))}",
        "",
        "Byte sizes are integers or Kubernetes quantities (`100Ki`, `4Mi`, `5Gi`, `1e6`); times are RFC 3339",
        "with a time zone. `kubectl explain copyjob.spec.<field>` prints the same descriptions.",
        "",
        "## Columns of `kubectl get copyjobs`",
        "",
        "| Column | Shown | Value | Description |",
        "| --- | --- | --- | --- |",
    ]
    for column in version.get("additionalPrinterColumns", []):
        shown = "with `-o wide`" if column.get("priority", 0) else "always"
        lines.append(
            f"| {column['name']} | {shown} | `{_cell(column['jsonPath'])}` | {_cell(column.get('description', ''))} |"
        )
    lines += [
        "",
        "## spec",
        "",
        _cell(str(spec.get("description", ""))),
        "",
        *_table(schema_fields(spec, "spec"), model_defaults(), with_defaults=True),
        "",
        "## status",
        "",
        _cell(str(status.get("description", ""))),
        "",
        *_table(schema_fields(status, "status"), {}, with_defaults=False),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the reference page of ``crds/copyjob.yaml`` (run from the repository's root)."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else CRD_PATH
    sys.stdout.write(reference(yaml.safe_load(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
