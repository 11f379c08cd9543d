"""Names a package offers but imports only when first asked for.

The command line's ``--help`` and the torch-free layers (the config, the store) must not pay for
torch, SQLAlchemy or plotly: a package that re-exports names from heavy modules gets its module
``__getattr__`` from :func:`lazy_names` (PEP 562) instead of importing them at once.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, modules: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: each name of ``modules`` comes from ``package.<its module>``."""

    def getattr_(name: str) -> Any:
        if name not in modules:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{modules[name]}"), name)
        setattr(sys.modules[package], name, value)  # found as a plain attribute from now on
        return value

    return getattr_
