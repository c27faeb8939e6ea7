"""The package layout: modules directly in vit_jax/ are commands, library code is in packages.

Read from the source with `ast` (nothing is imported or run), so a misplaced module or an
import from the library back into a command fails here in milliseconds.
"""

from __future__ import annotations

import ast
from pathlib import Path

VIT_JAX = Path(__file__).resolve().parents[1] / "vit_jax"
NOT_COMMANDS = {"__init__", "cli"}  # the package docstring; what the commands share
PACKAGES = ("model", "data", "training", "weights", "tools")


def command_names() -> set[str]:
    """The top-level modules of vit_jax (commands, plus `cli` and `__init__`)."""
    return {p.stem for p in VIT_JAX.glob("*.py")}


def is_command(tree: ast.Module) -> bool:
    """A `main` function and an `if __name__ == "__main__":` block."""
    has_main = any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
    has_guard = any(
        isinstance(n, ast.If) and isinstance(n.test, ast.Compare)
        and isinstance(n.test.left, ast.Name) and n.test.left.id == "__name__"
        for n in tree.body)
    return has_main and has_guard


def imported_vit_jax_modules(tree: ast.Module) -> set[str]:
    """Every `vit_jax...` module a source file imports (also inside functions)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("vit_jax")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vit_jax"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def test_every_top_level_module_is_a_command():
    names = command_names() - NOT_COMMANDS
    assert {"train", "evaluate", "predict", "export"} <= names
    not_commands = sorted(n for n in names if not is_command(parse(VIT_JAX / f"{n}.py")))
    assert not not_commands, f"vit_jax/{not_commands} are not commands: move them to a package"


def test_the_library_never_imports_a_command():
    commands = {f"vit_jax.{n}" for n in command_names() - {"__init__", "cli"}}
    commands.add("vit_jax.cli")  # what the commands share is not the library's either
    offenders = {}
    for package in PACKAGES:
        for path in sorted((VIT_JAX / package).glob("*.py")):
            bad = imported_vit_jax_modules(parse(path)) & commands
            if bad:
                offenders[str(path.relative_to(VIT_JAX.parent))] = sorted(bad)
    assert not offenders, offenders


def test_packages_import_downwards_only():
    """tools → training → weights → data → model (ARCHITECTURE.md), with two named exceptions."""
    allowed_upward = {("vit_jax/training/trainer.py", "vit_jax.tools.linear_fewshot"),
                      ("vit_jax/weights/loading.py", "vit_jax.training.state")}
    order = ["tools", "training", "weights", "data", "model"]
    upward = set()
    for package in order:
        for path in sorted((VIT_JAX / package).glob("*.py")):
            for module in imported_vit_jax_modules(parse(path)):
                other = module.split(".")[1] if module.count(".") >= 1 else ""
                if other in order and order.index(other) < order.index(package):
                    name = str(path.relative_to(VIT_JAX.parent))
                    if module.count(".") >= 2:  # the module itself, not just its package
                        upward.add((name, module))
    assert upward == allowed_upward


def test_the_packages_are_all_there_and_hold_only_a_docstring():
    for package in PACKAGES:
        tree = parse(VIT_JAX / package / "__init__.py")
        assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr), package
    subfolders = {p.name for p in VIT_JAX.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert subfolders == set(PACKAGES)


def test_the_checks_can_fail():
    library = parse(VIT_JAX / "training" / "trainer.py")
    assert not is_command(library)
    source = "from vit_jax import evaluate\nimport vit_jax.predict\n"
    assert imported_vit_jax_modules(ast.parse(source)) >= {"vit_jax.evaluate",
                                                           "vit_jax.predict"}
