"""Human-readable counts: ``"36M"``, ``"5.3G"``, ``"1.2e6"``, ``"36_500_000"`` <-> numbers."""

from __future__ import annotations

import re

_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_COUNT = re.compile(r"(?P<number>[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9]+)?)(?P<suffix>[kKmMgGtT]?)")


def parse_count(text: str | int | float) -> int:
    """Parse a budget such as ``36M``, ``5.3G``, ``1.2e6`` or ``36_500_000`` into an integer.

    Suffixes are decimal (K = 1e3, M = 1e6, G = 1e9, T = 1e12), case-insensitive.

    Raises:
        ValueError: the text is not such a count, or it is not positive.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a count: {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        found = _COUNT.fullmatch(text.strip())
        if found is None or found["number"].endswith("_"):
            raise ValueError(
                f"cannot read {text!r} as a count: use a number with an optional K/M/G/T suffix, "
                "e.g. 36M, 5.3G, 1.2e6 or 36_500_000"
            )
        value = float(found["number"].replace("_", "")) * _SUFFIXES[found["suffix"].upper()]
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"a count must be a positive finite number, got {text!r}")
    return int(round(value))


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
