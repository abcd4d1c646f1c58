"""The modules of koboldtui/control/ import each other without a circle (imports inside functions count).

A circle held together by imports inside functions is how a package stops having layers:
each module then needs the others loaded first. This walks every import in every module
(top level, inside functions, under TYPE_CHECKING) and fails on the first cycle, naming it.
"""

from __future__ import annotations

import ast
from pathlib import Path

CONTROL = Path(__file__).resolve().parents[1] / "koboldtui" / "control"
PREFIX = "koboldtui.control."


def control_imports(path: Path) -> set[str]:
    """The control/ modules ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith(PREFIX):
                found.add(node.module[len(PREFIX):].split(".")[0])
            elif node.module == "koboldtui.control":  # from koboldtui.control import logs
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(
                a.name[len(PREFIX):].split(".")[0] for a in node.names if a.name.startswith(PREFIX)
            )
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {p.stem for p in CONTROL.glob("*.py") if p.stem != "__init__"}
    return {
        m: {d for d in control_imports(CONTROL / f"{m}.py") if d in modules and d != m}
        for m in modules
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first = last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_control_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 10 and "supervisor" in graph  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import circle in koboldtui/control: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_but_the_supervisor_and_up_import_the_supervisor() -> None:
    graph = import_graph()
    assert {m for m, deps in graph.items() if "supervisor" in deps} <= {"foreground"}
