"""The package's shape: public faces, import rules, errors, the command line."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import criolib
from criolib.errors import CriolibError

ROOT = Path(criolib.__file__).parent
SUBPACKAGES = ["runtime_spec", "storage", "image", "cni", "conmon", "service", "testing"]
#: ARCHITECTURE.md's "may import" column, for criolib's own packages.
MAY_IMPORT = {
    "runtime_spec": set(),
    "storage": set(),
    "image": {"storage"},
    "cni": set(),
    "conmon": {"runtime_spec"},
    "service": {"runtime_spec", "storage", "image", "cni", "conmon"},
    "testing": {"runtime_spec", "storage", "image", "cni", "conmon", "service"},
    "cli": {"runtime_spec", "storage", "image", "cni", "conmon", "service", "testing"},
}
#: Shared top-level helpers every package may use.
SHARED = {"errors", "_atomic", "_exec", "_securejoin", "__init__"}


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py"))


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_all_is_sorted_and_exact(name: str) -> None:
    module = importlib.import_module(f"criolib.{name}")
    exported = module.__all__
    # The order itself is ruff's RUF022 (isort-style: CONSTANTS, Classes, functions).
    assert len(set(exported)) == len(exported)
    for attr in exported:
        assert hasattr(module, attr), f"criolib.{name}.__all__ names missing {attr}"
    public = {
        n for n, v in vars(module).items()
        if not n.startswith("_") and not inspect.ismodule(v) and n not in {"annotations",
                                                                             "logging"}
    }
    assert public == set(exported), f"criolib.{name} exports {public ^ set(exported)} off __all__"


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_every_package_has_an_error_root(name: str) -> None:
    module = importlib.import_module(f"criolib.{name}")
    roots = [v for v in vars(module).values()
             if inspect.isclass(v) and issubclass(v, CriolibError)]
    assert roots, f"criolib.{name} exports no CriolibError subclass"


def test_every_error_class_derives_from_the_root() -> None:
    for info in pkgutil.walk_packages([str(ROOT)], "criolib."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (inspect.isclass(value) and issubclass(value, Exception)
                    and value.__module__.startswith("criolib")):
                assert issubclass(value, CriolibError), value


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
    return [m for m in found if m == "criolib" or m.startswith("criolib.")]


def test_imports_point_down_the_architecture() -> None:
    problems = []
    for path in _modules():
        rel = path.relative_to(ROOT).parts
        if len(rel) == 1:
            continue  # top-level shared helpers import nothing of the packages
        own = rel[0]
        for target in _imports(path):
            parts = target.split(".")
            if len(parts) < 2 or parts[1] in SHARED or parts[1] == own:
                continue
            pkg = parts[1]
            if pkg not in MAY_IMPORT.get(own, set()):
                problems.append(f"{path.relative_to(ROOT)} imports {target}")
            elif len(parts) > 2 and parts[2].startswith("_"):
                problems.append(f"{path.relative_to(ROOT)} imports private {target}")
    assert not problems, "\n".join(problems)


def test_modules_stay_readable() -> None:
    long = [f"{p.relative_to(ROOT)}: {n}" for p in _modules()
            if (n := len(p.read_text().splitlines())) > 600]
    assert not long, long


def test_py_typed_ships() -> None:
    assert (ROOT / "py.typed").is_file()


def test_version_and_help() -> None:
    out = subprocess.run([sys.executable, "-m", "criolib", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == f"criolib {criolib.__version__}"
    help_text = subprocess.run([sys.executable, "-m", "criolib", "--help"], capture_output=True,
                               text=True, check=True).stdout
    assert "testbed" in help_text


def test_unknown_subcommand_fails_cleanly() -> None:
    proc = subprocess.run([sys.executable, "-m", "criolib", "no-such-thing"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
