"""A package's public API loaded on first use (PEP 562), so importing one light submodule (a config)
does not bring the package's heavy ones (torch, OpenCV, dlib) with it."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_api(package: str, api: dict[str, str]) -> tuple[list[str], Callable[[str], object]]:
    """(`__all__`, `__getattr__`) for `package`: `api` maps each public name to its submodule."""

    def __getattr__(name: str):
        if name in api:
            return getattr(importlib.import_module(f"{package}.{api[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return sorted(api), __getattr__
