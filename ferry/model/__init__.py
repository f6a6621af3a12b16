"""Shared values: the CopyJob API model and Kubernetes quantities."""

from ferry.model.copyjob import (
    API_VERSION,
    KIND,
    CopyJob,
    CopyJobSpec,
    Destination,
    Filter,
    Location,
    Manifest,
    ManifestFormat,
    Overwrite,
    Source,
    Verify,
)
from ferry.model.quantity import format_bytes, parse_bytes

__all__ = [
    "API_VERSION",
    "KIND",
    "CopyJob",
    "CopyJobSpec",
    "Destination",
    "Filter",
    "Location",
    "Manifest",
    "ManifestFormat",
    "Overwrite",
    "Source",
    "Verify",
    "format_bytes",
    "parse_bytes",
]
