"""Reading CopyJob files: YAML documents to a validated CopyJob plus the Secrets beside it.

`ferry run -f copyjob.yaml` takes the same file a user would `kubectl apply`. Errors name the file, the
document and the field, and say what to write instead.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ferry.errors import InvalidSpec
from ferry.model.copyjob import API_VERSION, KIND, CopyJob, parse_copyjob

#: A CopyJob file is small; anything bigger is a mistake or an attack.
MAX_FILE_BYTES = 1 << 20
#: Aliases are how YAML bombs grow; real manifests use few or none.
MAX_ALIASES = 64


@dataclass(frozen=True)
class SecretData:
    """The string values of one Secret document. Its repr never shows the values."""

    name: str
    values: dict[str, str] = field(repr=False)

    def __repr__(self) -> str:
        return f"SecretData(name={self.name!r}, keys={sorted(self.values)})"


@dataclass(frozen=True)
class JobFile:
    copyjob: CopyJob
    secrets: dict[str, SecretData]


def format_validation_error(error: ValidationError, model: type[BaseModel] = CopyJob) -> str:
    """One line per problem, ``spec.source.bucket: message``, in the user's field names."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(document)"
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            allowed = _allowed_fields(model, item["loc"][:-1])
            message = "unknown field" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
        elif item["type"] == "missing":
            message = "required field is missing"
        elif item["type"] in ("enum", "literal_error"):
            message = f"{message} (got {item.get('input')!r})"
        lines.append(f"{where}: {message}")
    return "\n".join(lines)


def _allowed_fields(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in path:
        fields = getattr(current, "model_fields", None)
        if fields is None:
            return []
        match = next((f for n, f in fields.items() if (f.alias or n) == part or n == part), None)
        if match is None:
            return []
        current = _model_of(match.annotation)
    fields = getattr(current, "model_fields", None) or {}
    return [f.alias or n for n, f in fields.items()]


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def parse_documents(text: str, source: str) -> list[dict[str, Any]]:
    """Parse a multi-document YAML text, refusing bombs and non-mapping documents."""
    if len(text.encode()) > MAX_FILE_BYTES:
        raise InvalidSpec(f"{source}: file is larger than {MAX_FILE_BYTES} bytes; a CopyJob file is small")
    try:
        aliases = sum(
            isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)
        )
        if aliases > MAX_ALIASES:
            raise InvalidSpec(f"{source}: {aliases} YAML aliases (limit {MAX_ALIASES}); refusing a YAML bomb")
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"{source}: not valid YAML: {exc}") from exc
    for index, document in enumerate(documents):
        if not isinstance(document, dict):
            raise InvalidSpec(f"{source}: document {index + 1} is a {type(document).__name__}, not a mapping")
    return documents


def load_job_file(path: Path) -> JobFile:
    """Read a file holding exactly one CopyJob and any number of Secrets."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidSpec(f"{path}: cannot read: {exc}") from exc
    return load_job_text(text, str(path))


def load_job_text(text: str, source: str = "<input>") -> JobFile:
    documents = parse_documents(text, source)
    jobs = [d for d in documents if d.get("kind") == KIND]
    secrets = [d for d in documents if d.get("kind") == "Secret"]
    others = [d.get("kind") for d in documents if d.get("kind") not in (KIND, "Secret")]
    if others:
        raise InvalidSpec(f"{source}: unexpected kind(s) {others}; the file may hold one CopyJob and Secrets")
    if len(jobs) != 1:
        raise InvalidSpec(f"{source}: expected exactly one document of kind {KIND}, found {len(jobs)}")
    raw = jobs[0]
    if raw.get("apiVersion") != API_VERSION:
        raise InvalidSpec(
            f"{source}: apiVersion is {raw.get('apiVersion')!r}; write apiVersion: {API_VERSION}"
        )
    try:
        job = parse_copyjob(raw)
    except ValidationError as exc:
        raise InvalidSpec(f"{source}: invalid CopyJob:\n{format_validation_error(exc)}") from exc
    return JobFile(copyjob=job, secrets={s.name: s for s in (_secret(d, source) for d in secrets)})


def _secret(document: dict[str, Any], source: str) -> SecretData:
    name = (document.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise InvalidSpec(f"{source}: a Secret document has no metadata.name")
    values: dict[str, str] = {}
    for key, value in (document.get("data") or {}).items():
        try:
            values[str(key)] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidSpec(f"{source}: Secret {name!r} data.{key} is not valid base64 text") from exc
    for key, value in (document.get("stringData") or {}).items():
        values[str(key)] = str(value)
    return SecretData(name=name, values=values)
