"""The package's layering: no import circles, and no module importing a layer above its own.

Read from the source (every `import`, also those inside functions), so a hidden upward
import cannot slip in through a function body. The layers, bottom to top, are those of the
README's "Where things live"; a module belongs to the most specific prefix listed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Bottom to top. A module may import its own layer and those below, never one above.
LAYERS: list[tuple[str, list[str]]] = [
    ("foundation", ["warmstart.errors", "warmstart.registry", "warmstart.typed",
                    "warmstart.files", "warmstart.tensors", "warmstart.summary",
                    "warmstart.version"]),
    ("config", ["warmstart.options", "warmstart.sections", "warmstart.config"]),
    ("tasks", ["warmstart.tasks"]),
    ("inputs", ["warmstart.data", "warmstart.models"]),
    # What a strategy's plan is made of (parameter groups, the loss type) and the parts of
    # training that know nothing of strategies.
    ("training parts", ["warmstart.training.optim", "warmstart.training.loss",
                        "warmstart.training.distributed", "warmstart.training.checkpoint",
                        "warmstart.training.callbacks", "warmstart.training.evaluate",
                        "warmstart.training.transfer", "warmstart.training.distill_loss",
                        "warmstart.training.record"]),
    ("strategies", ["warmstart.strategies"]),
    ("report", ["warmstart.report"]),
    ("training", ["warmstart.training"]),
    ("choose, ship", ["warmstart.choose", "warmstart.ship", "warmstart.distillation"]),
    ("entry points", ["warmstart.cli", "warmstart.__main__", "warmstart"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(SRC.joinpath("warmstart").rglob("*.py"))}


def layer_of(module: str) -> int:
    best, rank = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank >= 0, f"{module} belongs to no layer: add it to LAYERS"
    return rank


def imports_of(module: str) -> set[str]:
    """The warmstart modules `module` imports (a package's submodule where one is named)."""
    out = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "warmstart"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "warmstart":
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in MODULES else node.module)
    return out - {module}


GRAPH = {m: imports_of(m) for m in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_layer_above_its_own(module):
    mine = layer_of(module)
    above = sorted(f"{m} ({LAYERS[layer_of(m)][0]})" for m in GRAPH[module]
                   if layer_of(m) > mine)
    assert not above, f"{module} ({LAYERS[mine][0]}) imports {above}"


def test_no_import_circles():
    # Edges into a package's __init__ from its own submodules are left out: Python runs the
    # package first, so `from warmstart.models.base import X` inside models/ is no circle.
    def edges(m):
        return {t for t in GRAPH[m] if not (m.startswith(t + ".") and t in MODULES)}

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(edges(m)):
            if state.get(t) == 1:
                circle = stack[stack.index(t):] + [t]
                pytest.fail("import circle: " + " -> ".join(circle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m)


def test_the_layers_name_every_module_and_only_real_ones():
    for _, prefixes in LAYERS:
        for prefix in prefixes:
            assert prefix in MODULES, f"LAYERS names {prefix}, which is not a module"
    assert all(layer_of(m) >= 0 for m in MODULES)
