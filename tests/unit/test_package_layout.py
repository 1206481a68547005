"""The package's shape, checked: stages never import each other, no import cycles, no
module over 400 lines. Read from the source with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "daemon" / "speech2image"
STAGES = (
    "listening",
    "speech",
    "moderation",
    "images",
    "gallery",
    "desktop",
    "service",
    "control",
    "wyoming",
)
# What every stage may use: the shared vocabulary, not another stage.
SHARED = (
    "config",
    "configcheck",
    "events",
    "pcm",
    "model_files",
    "request",
    "sessionbus",
    "subscribers",
    "vocabulary",
)
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(("speech2image", *parts))] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    """Modules of this package that ``name`` imports (absolute names)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            if base.startswith("speech2image"):
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("speech2image"))
    return found & set(modules())


def stage_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in STAGES else None


GRAPH = {name: imports_of(name, path) for name, path in modules().items()}


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if stage_of(n)))
def test_a_stage_imports_only_itself_and_the_shared_modules(name: str) -> None:
    stage = stage_of(name)
    for imported in GRAPH[name]:
        other = stage_of(imported)
        if other is not None:
            assert other == stage, f"{name} imports {imported}: stages never import each other"
        else:
            short = imported.removeprefix("speech2image.")
            assert short in SHARED or imported == "speech2image", (
                f"{name} imports {imported}; a stage may use only {', '.join(SHARED)}"
            )


def test_shared_modules_import_no_stage() -> None:
    for short in SHARED:
        name = f"speech2image.{short}"
        stages = sorted(i for i in GRAPH[name] if stage_of(i))
        assert stages == [], f"{name} is shared but imports {stages}"


def test_no_import_cycles() -> None:
    """Module-level and function-level imports alike: a cycle is a cycle."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for imported in sorted(GRAPH[name]):
            if imported in (name, "speech2image"):
                continue
            if state.get(imported) == 1:
                cycle = [*trail[trail.index(imported) :], imported]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if imported not in state:
                visit(imported, [*trail, imported])
        state[name] = 2

    for name in GRAPH:
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_is_under_400_lines(name: str) -> None:
    lines = len(modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by what it does"
