"""Human-readable counts, sizes and durations: ``"36M"``, ``"2MB"``, ``"5ms"`` <-> numbers."""

from __future__ import annotations

import re

from splitsearch.errors import SplitsearchError


class UnitError(SplitsearchError, ValueError):
    """A count or a memory size cannot be read; the message says which forms are accepted."""


_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_COUNT = re.compile(r"(?P<number>[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9]+)?)(?P<suffix>[kKmMgGtT]?)")


def parse_count(text: str | int | float) -> int:
    """Parse a budget such as ``36M``, ``5.3G``, ``1.2e6`` or ``36_500_000`` into an integer.

    Suffixes are decimal (K = 1e3, M = 1e6, G = 1e9, T = 1e12), case-insensitive.

    Raises:
        UnitError: the text is not such a count, or it is not positive.
    """
    if isinstance(text, bool):
        raise UnitError(f"not a count: {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        found = _COUNT.fullmatch(text.strip())
        if found is None or found["number"].endswith("_"):
            raise UnitError(
                f"cannot read {text!r} as a count: use a number with an optional K/M/G/T suffix, "
                "e.g. 36M, 5.3G, 1.2e6 or 36_500_000"
            )
        value = float(found["number"].replace("_", "")) * _SUFFIXES[found["suffix"].upper()]
    if not value > 0 or value != value or value == float("inf"):
        raise UnitError(f"a count must be a positive finite number, got {text!r}")
    return int(round(value))


_BYTE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
_BYTES = re.compile(r"(?P<number>[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9]+)?)\s*(?P<unit>[a-zA-Z]*)")


def parse_bytes(text: str | int | float) -> int:
    """Parse a memory size such as ``2MB``, ``1.5MiB``, ``512KB`` or ``300000`` into bytes.

    KB/MB/GB are decimal (1e3, 1e6, 1e9), KiB/MiB/GiB binary (2^10, 2^20, 2^30), case-insensitive.

    Raises:
        UnitError: the text is not such a size, or it is not positive.
    """
    if isinstance(text, str):
        found = _BYTES.fullmatch(text.strip())
        if found is None or found["unit"].upper() not in _BYTE_UNITS or found["number"].endswith("_"):
            raise UnitError(f"cannot read {text!r} as a memory size: use a number with B, KB, MB, GB, KiB, "
                            "MiB or GiB, e.g. 2MB or 1.5MiB")
        text = float(found["number"].replace("_", "")) * _BYTE_UNITS[found["unit"].upper()]
    return parse_count(text)


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
_DURATION = re.compile(r"(?P<number>[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9]+)?)\s*(?P<unit>[a-zA-Zµ]*)")


def parse_duration(text: str | int | float) -> float:
    """Parse a duration such as ``5ms``, ``0.2s``, ``800us`` or ``1e-3s`` into seconds.

    The unit is required in text (ns, us or µs, ms, s; case-insensitive), so that ``5`` is
    never read as 5 seconds when 5 ms was meant; a number (from YAML, say) is in seconds.

    Raises:
        UnitError: the text is not such a duration, or it is not positive.
    """
    if isinstance(text, bool):
        raise UnitError(f"not a duration: {text!r}")
    if isinstance(text, str):
        found = _DURATION.fullmatch(text.strip())
        unit = found["unit"].lower() if found is not None else ""
        if found is None or unit not in _DURATION_UNITS or found["number"].endswith("_"):
            raise UnitError(f"cannot read {text!r} as a duration: use a number with a unit of ns, us, ms or s, "
                            "e.g. 5ms, 0.2s or 800us")
        value = float(found["number"].replace("_", "")) * _DURATION_UNITS[unit]
    elif isinstance(text, (int, float)):
        value = float(text)
    else:
        raise UnitError(f"not a duration: {text!r}")
    if not value > 0 or value == float("inf"):
        raise UnitError(f"a duration must be a positive finite time, got {text!r}")
    return value


def format_duration(seconds: float) -> str:
    """``0.00512 -> '5.12 ms'``: three significant digits in the largest unit under the value."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_count(value: float, digits: int = 3) -> str:
    """``36_700_000 -> '36.7M'``: three significant digits and a decimal suffix."""
    for suffix in ("T", "G", "M", "K"):
        scale = _SUFFIXES[suffix]
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def format_bytes(value: float) -> str:
    """``3_145_728 -> '3.00 MiB'``: binary units, as memory is usually read."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{int(value)} B"
