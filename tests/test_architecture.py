"""The package's imports follow the data flow (docs/architecture.md): a module imports only
from its own stage or lower ones, and no two modules import each other, even indirectly.
Reads the sources with ``ast``; imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import uscl

SRC = Path(uscl.__file__).resolve().parent
# lowest first: each stage may import from the stages before it
STAGES = [
    ("errors", "utils", "__init__"),
    ("video",), ("synth",), ("store",), ("data",), ("augment",), ("models",), ("losses",), ("checkpoint",),
    ("pretrain",), ("finetune",), ("report",), ("infer",), ("pipeline", "study"), ("demo",), ("serve",),
    ("commands",), ("cli", "__main__"),
]
STAGE_OF = {name: i for i, names in enumerate(STAGES) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, int]]:
    """``(imported uscl module, line)`` of every import in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module
            if base.startswith("uscl"):
                out += [(f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base, node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("uscl")]
    return out


def _is_module(name: str) -> bool:
    p = SRC.parent.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def stage(module: str) -> int:
    parts = module.split(".")
    return STAGE_OF[parts[1] if len(parts) > 1 else "__init__"]


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        edges[module_name(path)] = {m for m, _ in imports(path)}
    return edges


def test_every_subpackage_has_a_stage():
    tops = {p.name if p.is_dir() else p.stem for p in SRC.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert tops <= set(STAGE_OF), sorted(tops - set(STAGE_OF))


def test_imports_go_only_down_the_data_flow():
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        me = module_name(path)
        for target, line in imports(path):
            if stage(target) > stage(me):
                upward.append(f"{path.relative_to(SRC.parent)}:{line} {me} -> {target}")
    assert not upward, "\n".join(upward)


def test_no_import_cycles_between_modules():
    edges = graph()
    # a package's __init__ re-exporting its modules is not a cycle with them
    edges = {m: {t for t in ts if not (m.startswith(t + ".") or t == m)} for m, ts in edges.items()}
    cycles, state = [], {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if t not in edges:
                continue
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif not state.get(t):
                visit(t, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if not state.get(m):
            visit(m, [])
    assert not cycles, "\n".join(cycles)
