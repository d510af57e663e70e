"""The exception tree drawn in contracts/errors.py is the code's, and every public name is real."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from types import ModuleType

import schakel.contracts.errors
from schakel.contracts.errors import SchakelError

PACKAGES = (
    "schakel.contracts",
    "schakel.keys",
    "schakel.bus",
    "schakel.hub",
    "schakel.adapters",
    "schakel.harness",
)


def _modules() -> list[ModuleType]:
    found = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        found.append(package)
        for info in pkgutil.iter_modules(package.__path__, prefix=f"{name}."):
            if not info.name.endswith("__main__"):
                found.append(importlib.import_module(info.name))
    return found


def _exceptions() -> dict[str, type[BaseException]]:
    return {
        cls.__name__: cls
        for module in _modules()
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == module.__name__
    }


def test_every_project_exception_is_a_schakel_error() -> None:
    """Callers can catch everything Schakel raises on purpose with one class."""
    strays = [
        name
        for name, cls in _exceptions().items()
        if not issubclass(cls, SchakelError) and not name.startswith("_")
    ]
    assert strays == []


def test_the_drawn_tree_is_the_code() -> None:
    """Each class in the drawing exists, sits under the parent drawn, and none is missing."""
    doc = schakel.contracts.errors.__doc__ or ""
    lines = [line for line in doc.splitlines() if re.search(r"(├──|└──|^\s{4}SchakelError)", line)]
    drawn: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in lines:
        found = re.search(r"(\w+)\s*(?:\(|$|\s{2})", line.split("── ")[-1].strip() + "  ")
        assert found is not None, line
        depth = line.index(found.group(1))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        drawn[found.group(1)] = stack[-1][1] if stack else None
        stack.append((depth, found.group(1)))
    assert len(drawn) > 10, drawn
    actual = {n: c for n, c in _exceptions().items() if issubclass(c, SchakelError)}
    actual["SchakelError"] = SchakelError
    assert set(drawn) == set(actual)
    for name, parent in drawn.items():
        if parent is not None:
            assert actual[name].__bases__[0] is actual[parent], name


def test_every_exported_name_exists_and_is_public() -> None:
    """``__all__`` names only what the module has, and nothing private."""
    for module in _modules():
        for name in getattr(module, "__all__", ()):
            assert hasattr(module, name), (module.__name__, name)
            assert not name.startswith("_"), (module.__name__, name)
