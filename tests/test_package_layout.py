"""The package layout shows the architecture: every module imports on its own, the layers import one way
(cli -> training -> algorithm / env -> policies -> bridge), and no modules import each other in a circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "tempest_gym"

#: the layers, lowest first; a module may import its own layer and the ones below, never one above
LAYERS = {
    "tempest_gym.errors": 0,
    "tempest_gym.bridge": 0,
    "tempest_gym.policies": 1,
    "tempest_gym.env": 2,
    "tempest_gym.hybrid_dqn": 2,
    "tempest_gym.training": 3,
    "tempest_gym.cli": 4,
}
#: same layer, but independent: the algorithm knows no Tempest env, the env no algorithm
SEPARATE = {("tempest_gym.env", "tempest_gym.hybrid_dqn"), ("tempest_gym.hybrid_dqn", "tempest_gym.env")}
#: ``python -m tempest_gym.<tool>`` entry points kept for existing commands: above everything
ENTRY_POINTS = {f"tempest_gym.{t}" for t in ("train", "enjoy", "evaluate", "replay", "plot", "client")}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (the ``policies`` link counted once, as tempest_gym.policies)."""
    found = {}
    for root, prefix in ((PACKAGE, ("tempest_gym",)), (REPO / "policies", ("tempest_gym", "policies"))):
        for path in sorted(root.rglob("*.py")):
            if path.is_relative_to(PACKAGE / "policies"):
                continue
            rel = path.relative_to(root).with_suffix("")
            parts = prefix + (rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """tempest_gym modules ``name`` imports anywhere in its file (functions included)."""
    out = set()
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in known and t != name)
    return out


def layer(name: str) -> tuple[str, int] | None:
    for prefix, level in LAYERS.items():
        if name == prefix or name.startswith(prefix + "."):
            return prefix, level
    return None


def test_layers_import_one_way():
    known = modules()
    wrong = []
    for name, path in known.items():
        if name == "tempest_gym" or name in ENTRY_POINTS:
            continue  # the facade (ENV_ID, make_tempest_vec_env) and the entry points may use anything
        own = layer(name)
        assert own is not None, f"{name} belongs to no layer: add it to LAYERS"
        for target in imports(name, path, known):
            if target in ENTRY_POINTS:
                wrong.append(f"{name} imports the entry point {target}")
                continue
            other = layer(target)
            if other is None:  # the tempest_gym facade
                continue
            if other[1] > own[1] or (own[0], other[0]) in SEPARATE:
                wrong.append(f"{name} ({own[0]}) imports {target} ({other[0]})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    # a package's __init__ re-exporting its modules is no cycle with them
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_every_module_imports_on_its_own():
    """``python -c "import <module>"`` for each, in fresh interpreters (so no module relies on another's import)."""

    def try_import(name: str) -> str | None:
        out = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=REPO, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
        return None if out.returncode == 0 else f"{name}: {out.stderr.strip().splitlines()[-1:]}"

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [f for f in pool.map(try_import, sorted(modules())) if f]
    assert not failures, "\n".join(failures)


def test_the_expert_is_installed_under_the_package_only():
    """policies/ is a top-level folder of the checkout but no top-level module of an install: tempest_gym/policies
    is a link to it, and setup.py maps it there."""
    link = PACKAGE / "policies"
    assert link.is_symlink() and link.resolve() == (REPO / "policies").resolve()
    from tempest_gym.policies.expert import TempestExpert

    assert Path(sys.modules[TempestExpert.__module__].__file__).resolve().parent == (REPO / "policies").resolve()
