"""Kubernetes quantity notation for byte sizes (``100Ki``, ``4Mi``, ``5Gi``, ``1e6``, ``1500``) and CPU
(``500m``, ``2``).

Pure parsing used by the CopyJob model; the CRD's schema accepts the same strings.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_PATTERN = re.compile(
    r"^([+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+))(?:([eE][+-]?[0-9]{1,3})|(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E))?$"
)
#: Larger than any byte count S3 or Kubernetes can mean (2^63 - 1); refusing it keeps parsing cheap.
MAX_BYTES = 2**63 - 1

#: The same rule as a JSON-schema pattern, for the CRD.
QUANTITY_SCHEMA_PATTERN = (
    r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
)


def parse_bytes(value: str | int) -> int:
    """Return the number of bytes a quantity denotes.

    Args:
        value: an integer, or a string in Kubernetes quantity notation.

    Raises:
        ValueError: the value is negative, fractional in bytes, or not a quantity; the message shows
            accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity; use a byte count such as 1048576 or 1Mi")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative; sizes must be 0 or more")
        return value
    match = _PATTERN.fullmatch(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a quantity; use forms like 1500, 100Ki, 4Mi, 5Gi, 1e6 or 10M")
    number_text, exponent, suffix = match.groups()
    try:
        number = Decimal(number_text)
    except InvalidOperation as exc:  # pragma: no cover - the regex already guarantees a number
        raise ValueError(f"{value!r} is not a quantity") from exc
    if exponent:
        number *= Decimal(10) ** int(exponent[1:])
    elif suffix in _BINARY:
        number *= _BINARY[suffix]
    else:
        number *= _DECIMAL[suffix or ""]
    if number > MAX_BYTES:
        raise ValueError(f"{value!r} is larger than the largest size, {MAX_BYTES} bytes")
    if number != number.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(number)


def format_bytes(count: float) -> str:
    """Human-readable binary size (``1.5 MiB``) for displays; never used for parsing."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(size) < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} PiB"  # pragma: no cover


def to_quantity(count: int) -> str:
    """The shortest exact Kubernetes quantity for a byte count (``104857600`` -> ``100Mi``)."""
    for suffix, factor in reversed(_BINARY.items()):
        if count and count % factor == 0:
            return f"{count // factor}{suffix}"
    return str(count)


def to_display_quantity(count: int) -> str:
    """A byte count in Kubernetes notation rounded to one decimal (``77700000`` -> ``74.1Mi``), for status
    fields people read beside the exact count; exact quantities stay exact (``256Mi``)."""
    if count < 1024:
        return str(count)
    suffix, factor = next((s, f) for s, f in reversed(_BINARY.items()) if count >= f)
    if count % factor == 0:
        return f"{count // factor}{suffix}"
    return f"{count / factor:.1f}".removesuffix(".0") + suffix


_CPU = re.compile(r"^([0-9]+)m$|^([0-9]+(?:\.[0-9]+)?)$")


def parse_cpu(value: str | int) -> int:
    """Return the millicores a CPU quantity denotes (``500m`` -> 500, ``2`` -> 2000, ``1.5`` -> 1500).

    The forms are the CopyJob's (``spec.resources.cpu``); a fraction of a millicore is rounded up, as the
    API server rounds it.

    Raises:
        ValueError: not a CPU quantity; the message shows accepted forms.
    """
    match = None if isinstance(value, bool) else _CPU.fullmatch(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a CPU quantity; use forms like 500m or 2")
    millis, cores = match.groups()
    if millis is not None:
        return int(millis)
    return int((Decimal(cores) * 1000).to_integral_value(rounding=ROUND_CEILING))


def to_cpu_quantity(millis: int) -> str:
    """The shortest exact CPU quantity for millicores (``2000`` -> ``2``, ``1500`` -> ``1500m``)."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_duration(seconds: float | None) -> str:
    """A duration for people: 2h05m, 4m10s, 7s; "--" when unknown."""
    if seconds is None:
        return "--"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
