"""Lazy package exports: a package's ``__init__`` names its public API without importing every module.

Importing one module of a package (say ``stream.runtime.checkpoints``) must not pull in torch through
its siblings, so the packages whose modules are heavy export their names through :pep:`562`'s module
``__getattr__``, built here once::

    __all__, __getattr__ = lazy_exports(__name__, {"UserStore": "state.user_store", ...})

>>> names, getattr_ = lazy_exports("demo", {"sqrt": "math"})
>>> names, getattr_("sqrt")(9.0)
(['sqrt'], 3.0)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[list[str], Callable[[str], object]]:
    """``__all__`` (the sorted names) and a module ``__getattr__`` importing ``exports[name]`` on first use."""
    table = dict(exports)

    def __getattr__(name: str) -> object:
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return sorted(table), __getattr__
