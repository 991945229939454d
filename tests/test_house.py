"""The shape of the package: stages import one way, no cycles, small modules, old names work.

Every import of a project module counts, at the top of a file or inside a function.
"""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import helpers

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "helpers"
#: the stages, in import order: a module may import its own stage and those before it
STAGES = ["core", "models", "runtime", "books", "claude", "questions", "data", "training",
          "evaluation", "export", "pipeline", "notebooks"]
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}


def _resolve(name: str) -> str | None:
    """The project module an imported dotted name lands in (old names followed)."""
    parts = name.split(".")
    if len(parts) >= 2 and parts[0] == "helpers" and parts[1] in helpers.MOVED:
        parts = helpers.MOVED[parts[1]].split(".") + parts[2:]
    while parts:
        dotted = ".".join(parts)
        if dotted in MODULES:
            return dotted
        parts = parts[:-1]
    return None


def imports_of(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            if n.split(".")[0] == "helpers":
                target = _resolve(n)
                if target and target != module:
                    out.add(target)
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_projects_modules():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles (function-level imports count too): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def test_stages_import_one_way():
    wrong = []
    for module, targets in GRAPH.items():
        here = _stage(module)
        for t in targets:
            there = _stage(t)
            if here and there and STAGES.index(there) > STAGES.index(here):
                wrong.append(f"{module} -> {t}")
    assert not wrong, f"a stage imports a later one (order: {' < '.join(STAGES)}): {wrong}"


def test_every_module_lives_in_a_stage_and_is_small():
    loose = [m for m in MODULES if m != "helpers" and _stage(m) is None]
    assert not loose, f"modules outside the stage packages: {loose}"
    big = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


@pytest.mark.parametrize("old", sorted(helpers.MOVED))
def test_old_module_names_are_the_same_modules(old):
    assert importlib.import_module(f"helpers.{old}") is importlib.import_module(helpers.MOVED[old])


def test_names_the_docs_use_still_import():
    from helpers.export import export_all
    from helpers.pdf import load_corpus, load_passages
    from helpers.templates import tokenize_dataset, tokenize_for_training
    assert all(callable(f) for f in (export_all, load_corpus, load_passages, tokenize_dataset,
                                     tokenize_for_training))


@pytest.mark.parametrize("command", ["pdf", "qa", "finetune", "sweep", "notebooks", "demo"])
def test_documented_commands_still_run(command):
    proc = subprocess.run([sys.executable, "-m", f"helpers.{command}", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"helpers.{command}" in proc.stdout or "usage" in proc.stdout
