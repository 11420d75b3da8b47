"""The layer rule of docs/ARCHITECTURE.md, checked on the source: every import of a calibclip module
(module level or inside a function) goes to the same package or to a lower layer."""

from __future__ import annotations

import ast
from pathlib import Path

import calibclip

SRC = Path(calibclip.__file__).parent

# lowest first; a package may import its own modules and any package of a lower layer
LAYERS = [
    {"errors", "tensors", "atomic", "oom", "blas", "cores", "ranks", "paths", "__init__"},
    {"images", "tokenizer", "tomlfile", "data"},
    {"backends", "testing"},
    {"calib"},
    {"cir"},
    {"index", "eval", "explain"},
    {"demo", "serve", "reproduce"},
    {"cli"},
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def package_of(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    return rel.parts[0]


def imported_packages(path: Path) -> set[tuple[str, int]]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "calibclip":  # `from calibclip import cir` / `__version__`
                names = [f"calibclip.{a.name}" for a in node.names]
            elif node.module.startswith("calibclip."):
                names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("calibclip.")]
        for name in names:
            part = name.split(".")[1]
            found.add(("__init__" if part == "__version__" else part, node.lineno))
    return found


def test_every_package_has_a_layer():
    packages = {package_of(p) for p in SRC.rglob("*.py")}
    assert packages - set(LEVEL) == set(), "add the new package to LAYERS and docs/ARCHITECTURE.md"


def test_imports_only_go_down():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        own = package_of(path)
        for target, line in imported_packages(path):
            if target != own and LEVEL[target] >= LEVEL[own]:
                bad.append(f"{path.relative_to(SRC)}:{line} imports calibclip.{target}")
    assert bad == []


def test_the_rule_catches_an_upward_import(tmp_path):
    fake = tmp_path / "x.py"
    fake.write_text("def f():\n    from calibclip.cli.common import console\n")
    assert imported_packages(fake) == {("cli", 2)}


def test_the_command_line_imports_no_heavy_library():
    """`calibclip --help` must stay fast: the CLI package imports typer/rich only, not torch/transformers."""
    import subprocess
    import sys

    code = ("import sys, calibclip, calibclip.cli; "
            "print(sorted(m for m in ('torch', 'transformers', 'faiss', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
