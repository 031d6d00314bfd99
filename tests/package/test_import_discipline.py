"""Import discipline of the package (issue 26, step 2): an import inside a function says why it is
there (an optional extra, a light entry point kept free of torch, ...), and no two modules import
each other at module level, directly or around a longer circle."""

from __future__ import annotations

import ast
import io
import json
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "medsplit"
_DEFINES_SPEC = re.compile(r"^SPEC\s*(:[^=]+)?=", re.MULTILINE)  # as medsplit.plugins finds plug-ins


def _comment_lines(source: str) -> set[int]:
    """Line numbers holding a ``#`` comment (a real one: not a ``#`` inside a string)."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {tok.start[0] for tok in tokens if tok.type == tokenize.COMMENT}


def uncommented_function_imports(path: Path, root: Path = ROOT) -> list[str]:
    """``"path:line: statement"`` (the path relative to ``root``) for each import inside a function with no comment saying why: a
    comment on its line or on the line above, or the import directly above it (a block of imports
    under one comment) has one."""
    source = path.read_text()
    comments, lines = _comment_lines(source), source.splitlines()
    missing = []

    def visit(node: ast.AST, in_function: bool) -> None:
        previous_commented_import = None  # end line of the import just before, when it has a reason
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)) and in_function:
                commented = (bool(comments & {child.lineno, child.lineno - 1})
                             or previous_commented_import == child.lineno - 1)
                if not commented:
                    missing.append(f"{path.relative_to(root)}:{child.lineno}: {lines[child.lineno - 1].strip()}")
                previous_commented_import = child.end_lineno if commented else None
                continue
            previous_commented_import = None
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(source), False)
    return missing


def module_names(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` (a package is its ``__init__``)."""
    names = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The imports that run when the module is imported: not in a function, not under ``if TYPE_CHECKING``."""
    found = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def _registry_imports(name: str, path: Path, tree: ast.Module, modules: dict[str, Path]) -> set[str]:
    """The submodules a self-filling registry's ``__init__`` imports by name while it loads: every
    plug-in module (``SPEC = ...``) for :func:`medsplit.plugins.discover_specs`, every module for an
    ``importlib.import_module(f"{__name__}. ...")`` loop."""
    if path.name != "__init__.py":
        return set()
    calls = [n for n in _module_level_nodes(tree) if isinstance(n, ast.Call)]
    called = {ast.unparse(c.func).rpartition(".")[2] for c in calls}
    own = {m: p for m, p in modules.items() if m.rpartition(".")[0] == name and p.name != "__init__.py"}
    found = set()
    if "import_module" in called and any("__name__" in ast.unparse(c) for c in calls if "import_module" in ast.unparse(c.func)):
        found |= set(own)
    if "discover_specs" in called:
        found |= {m for m, p in own.items() if _DEFINES_SPEC.search(p.read_text())}
    return found


def _module_level_nodes(tree: ast.Module):
    """Every node that runs when the module is imported (function bodies left out)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules its module-level imports run (a submodule's parent packages
    too, and the plug-ins a registry package imports by name)."""
    modules = module_names(package)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        edges = _registry_imports(name, path, tree, modules)
        for node in _module_level_imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: from the module's own package up
                    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    here = here[:len(here) - node.level + 1]
                    base = ".".join(here + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:  # an attribute of a module: that module
                    target = target.rpartition(".")[0]
                parents = [target.rsplit(".", k)[0] for k in range(target.count(".") + 1)] if target else []
                edges |= {t for t in parents if t != name and not name.startswith(t + ".")}
        graph[name] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle ``[a, b, ..., a]`` per strongly connected group of modules (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_circle_in(group, graph) for group in groups]


def _circle_in(group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest circle through the group's first module (breadth-first), to name in a failure."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return sorted(group)


def test_every_function_level_import_says_why():
    missing = [line for path in sorted(PACKAGE.rglob("*.py")) for line in uncommented_function_imports(path)]
    assert not missing, ("imports inside functions without a comment saying why (move them to the top, or say "
                         "which optional extra, light entry point or import cycle keeps them there):\n"
                         + "\n".join(missing))


def test_the_package_has_no_module_level_import_cycle():
    cycles = import_cycles(import_graph(PACKAGE))
    assert not cycles, "module-level import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checks_catch_an_uncommented_import_and_a_cycle(tmp_path):
    """The two checks above can fail: a made-up package with both faults."""
    pkg = tmp_path / "medsplit"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from medsplit.sub.b import B\n")
    (pkg / "a.py").write_text("import json\n\n\ndef f():\n    import os\n\n    # optional extra\n"
                              "    import yaml\n    import zlib\n\n    import gzip  # '#' in a string is no reason\n\n"
                              "    x = '#'; import csv\n")
    (pkg / "sub" / "b.py").write_text("from ..a import f\n\nB = 1\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from medsplit import a\n")
    missing = [m.split(": ")[0].rsplit(":", 1)[1] for m in uncommented_function_imports(pkg / "a.py", tmp_path)]
    assert missing == ["5", "13"]  # os and csv; yaml, zlib (same block) and gzip say why
    graph = import_graph(pkg)
    assert graph["medsplit.sub.b"] == {"medsplit.a"} and graph["medsplit.c"] == set()
    assert import_cycles(graph) == []
    (pkg / "a.py").write_text("from medsplit.sub import B\n")  # a -> sub -> sub.b -> a
    assert import_cycles(import_graph(pkg)) == [["medsplit.a", "medsplit.sub", "medsplit.sub.b", "medsplit.a"]]
    (pkg / "a.py").write_text("")
    (pkg / "reg").mkdir()  # a registry that imports its plug-ins by name; one plug-in imports the other package
    (pkg / "reg" / "__init__.py").write_text("from medsplit.plugins import discover_specs\n"
                                             "SPECS = discover_specs(__name__, __path__, object)\n")
    (pkg / "reg" / "plug.py").write_text("from medsplit import c\n\nSPEC = 1\n")
    (pkg / "reg" / "helper.py").write_text("")
    (pkg / "c.py").write_text("import medsplit.reg\n")  # c -> reg -> (by name) reg.plug -> c
    graph = import_graph(pkg)
    assert graph["medsplit.reg"] == {"medsplit.reg.plug"}  # helper defines no SPEC: not imported
    assert import_cycles(graph) == [["medsplit.c", "medsplit.reg", "medsplit.reg.plug", "medsplit.c"]]


_IMPORT_EACH = '''
import importlib, json, sys, warnings
warnings.simplefilter("ignore")
import torch  # noqa: F401 - third-party modules stay loaded; only medsplit's are imported afresh
failed = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "medsplit" or m.startswith("medsplit.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ImportError as e:
        if (e.name or "").split(".")[0] not in ("nvflare", "mlflow"):  # optional extras may be missing
            failed[name] = f"{type(e).__name__}: {e}"
    except Exception as e:
        failed[name] = f"{type(e).__name__}: {e}"
print(json.dumps(failed))
'''


@pytest.mark.slow
def test_every_module_imports_first():
    """The runtime side of the cycle test: each module imported first, from a clean state, loads
    (a circle through a registry's by-name imports shows up here as a partially initialised module)."""
    names = sorted(n for n in module_names(PACKAGE) if not n.endswith("__main__"))
    out = subprocess.run([sys.executable, "-c", _IMPORT_EACH, json.dumps(names)], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    failed = json.loads(out.stdout.strip().splitlines()[-1])
    assert not failed, "\n".join(f"{name}: {error}" for name, error in failed.items())
