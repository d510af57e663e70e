"""The public surface is what ``__all__`` says (as httpx's ``test_exported_members``).

Every module declares ``__all__``; every public class and function it defines is in it; every
import of a Schakel name, in the product, the tests and the benchmark, takes a name that its
module exports (tests may also reach a private helper, named with ``_``); and each package's
``__init__`` exports its entry points.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path
from types import ModuleType

import schakel

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("contracts", "keys", "bus", "hub", "adapters", "harness")
ENTRY_POINTS = {
    "schakel.contracts": {"SchakelError", "ContractError", "EnvelopeError", "MessageType"},
    "schakel.keys": {"PartnerIdentity", "KeyDirectory", "seal", "open_envelope"},
    "schakel.bus": {"Bus", "Credentials", "TransportError", "Topology"},
    "schakel.hub": {"Hub", "HubSettings", "Router", "provision"},
    "schakel.adapters": {"PartnerClient", "Delivery", "Refusal", "Rejected", "InboundFull"},
    "schakel.harness": {"local_hub", "LocalHub", "ScenarioRunner", "run_demo"},
}


def _modules() -> list[ModuleType]:
    found = [schakel, importlib.import_module("schakel.cli")]
    for name in PACKAGES:
        package = importlib.import_module(f"schakel.{name}")
        found.append(package)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"schakel.{name}."):
            if not info.name.endswith("__main__"):
                found.append(importlib.import_module(info.name))
    return found


def test_every_module_declares_its_public_names() -> None:
    missing = [m.__name__ for m in _modules() if not hasattr(m, "__all__")]
    assert missing == []


def test_every_public_class_and_function_is_exported() -> None:
    unexported = []
    for module in _modules():
        exported = set(getattr(module, "__all__", ()))
        for name, value in vars(module).items():
            defined_here = getattr(value, "__module__", None) == module.__name__
            kind = inspect.isclass(value) or inspect.isfunction(value)
            if kind and defined_here and not name.startswith("_") and name not in exported:
                unexported.append(f"{module.__name__}.{name}")
    assert unexported == []


def _sources() -> list[Path]:
    roots = [ROOT / p for p in (*PACKAGES, "tests", "bench")] + [ROOT / "schakel"]
    files: list[Path] = []
    for root in roots:
        pattern = "*.py" if root.name == "schakel" else "**/*.py"
        files.extend(p for p in root.glob(pattern) if p.is_file())
    return files


def test_every_import_takes_an_exported_name() -> None:
    """An import of a name its module does not export is an import of an implementation
    detail: it breaks silently when the module changes."""
    wrong = []
    for path in _sources():
        in_tests = ROOT / "tests" in path.parents
        tree = ast.parse(path.read_text("utf-8"), str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.ImportFrom) and node.module):
                continue
            if not node.module.startswith("schakel.") or node.level:
                continue
            module = importlib.import_module(node.module)
            exported = set(getattr(module, "__all__", ()))
            for alias in node.names:
                name = alias.name
                if name in exported or (in_tests and name.startswith("_")):
                    continue
                if inspect.ismodule(getattr(module, name, None)):
                    continue  # a submodule
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{name}")
    assert wrong == []


def test_every_error_is_exported_by_its_package() -> None:
    """A caller catches Schakel's errors by importing them from the package."""
    from schakel.contracts.errors import SchakelError

    missing = []
    for module in _modules():
        package = ".".join(module.__name__.split(".")[:2])
        exported = set(getattr(importlib.import_module(package), "__all__", ()))
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, SchakelError)
                    and value.__module__ == module.__name__ and name not in exported
                    and not name.startswith("_")):  # fmt: skip
                missing.append(f"{package}: {name}")
    assert missing == []


def test_each_package_exports_its_entry_points() -> None:
    for package, names in ENTRY_POINTS.items():
        module = importlib.import_module(package)
        assert names <= set(getattr(module, "__all__", ())), package
        for name in module.__all__:
            assert hasattr(module, name), (package, name)


def test_only_the_clock_reads_the_wall_clock() -> None:
    """Every component takes a clock (``contracts/clock.py``); none reads the time itself, so
    tests and simulations can move time. (Monotonic timers for durations are not the time.)"""
    readers = []
    clock = ROOT / "contracts" / "clock.py"
    for path in _sources():
        if path == clock or ROOT / "tests" in path.parents or ROOT / "bench" in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                name = node.func.attr
                owner = ast.unparse(node.func.value)
                if (name in ("now", "utcnow", "today") and "datetime" in owner) or (
                    name == "time" and owner == "time"
                ):
                    readers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert readers == []
