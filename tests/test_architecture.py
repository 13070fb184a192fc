"""The tree is the architecture: rooms in the order a question flows, no import cycles, small modules.

Every `import` counts, including those inside functions (a lazy import that hides a cycle is still a
cycle), so these checks read the source rather than `sys.modules`.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "reasonrag"
# The rooms, lowest first. A module may import its own room and any room of a lower rank, never a higher
# one or a sibling of the same rank: policies and PRMs both sit on data, retrieval and llm, and neither
# knows the other.
RANK = {
    "errors": 0,
    "data": 1,
    "parallel": 1,
    "retrieval": 2,
    "llm": 2,
    "policies": 3,
    "prm": 3,
    "agent": 4,
    "training": 5,
    "evaluation": 5,
    "web": 6,
    "cli": 7,
}
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The reasonrag modules `name` imports, anywhere in its source (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("reasonrag"):
                found.add(target)
    return found


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_module_sits_in_a_known_room():
    loose = [
        m for m in _modules() if m.count(".") == 1 and _room(m) not in RANK and m != "reasonrag.__main__"
    ]
    assert not loose, f"modules outside the rooms: {loose}"


def test_no_room_reaches_up_or_sideways():
    wrong = []
    for module, deps in _graph().items():
        room = _room(module)
        if room not in RANK:  # the package itself and __main__ sit on top
            continue
        for dep in deps:
            other = _room(dep)
            if other is None or other == room:
                continue
            if RANK[other] >= RANK[room]:
                wrong.append(f"{module} -> {dep}")
    assert not wrong, "imports that reach up or sideways:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = _graph()
    # Package __init__ files only describe their room (cli's re-exports main); they are not nodes of a cycle.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_is_too_long_to_read_in_a_sitting():
    long = {
        name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"
