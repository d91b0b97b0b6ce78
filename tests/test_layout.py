"""The package's import graph keeps the house rules (DESIGN.md, "Parts and their contracts").

- no import cycles between modules (imports inside functions count too);
- a ``_private`` name is private to the package that holds it: ``gigaseg.engine._cpu_kernels``
  may be imported by ``gigaseg.engine.*`` only, a ``_name`` defined in a module only by modules
  of the same subpackage (never across top-level modules, never from ``gigaseg`` itself), and
  the top-level private modules (``gigaseg._atomic``, ...) by anything in the package, for
  their public names;
- nothing outside ``gigaseg.cli`` imports ``gigaseg.cli`` (but ``gigaseg.__main__``, the command's
  ``python -m gigaseg``); nothing outside ``cli`` and
  ``bench`` imports ``gigaseg.bench``; nothing imports scripts or benchmarks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gigaseg

ROOT = Path(gigaseg.__file__).resolve().parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imports(path: Path) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import in ``path``."""
    module = _module_name(path)
    package = _package_of(module, path)
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                out.append((target, alias.name, node.lineno))
    return out


def _graph():
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    edges: dict[str, list[tuple[str, str | None, int]]] = {}
    for name, path in modules.items():
        found = []
        for target, alias, line in _imports(path):
            if not target.startswith("gigaseg"):
                continue
            # "from gigaseg.engine import forward" imports the module gigaseg.engine.forward
            sub = f"{target}.{alias}" if alias else None
            if sub in modules:
                found.append((sub, None, line))
            else:
                found.append((target, alias, line))
        edges[name] = found
    return modules, edges


def _is_private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def test_no_import_cycles():
    modules, edges = _graph()
    graph = {m: {t for t, _, _ in edges[m] if t in modules and t != m} for m in modules}
    # a package's __init__ importing its own modules is not a cycle with them
    for m in graph:
        graph[m] = {t for t in graph[m] if not t.startswith(m + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _violations() -> list[str]:
    modules, edges = _graph()
    bad = []
    for m, path in modules.items():
        package = _package_of(m, path)
        for target, alias, line in edges[m]:
            where = f"{path.relative_to(ROOT.parent)}:{line}"
            parts = target.split(".")
            for i, part in enumerate(parts):
                if _is_private(part):
                    owner = ".".join(parts[:i])
                    if not (package == owner or package.startswith(owner + ".")):
                        bad.append(f"{where}: {m} imports the private module {target}")
                    break
            if alias and _is_private(alias):
                target_package = _package_of(target, modules.get(target, Path("x.py")))
                same_subpackage = package == target_package and package != "gigaseg"
                if not same_subpackage:
                    bad.append(f"{where}: {m} imports the private name {target}.{alias}")
            # gigaseg.__main__ is the command itself (python -m gigaseg), not the library
            for forbidden, allowed in (("gigaseg.cli", ("gigaseg.cli", "gigaseg.__main__")),
                                       ("gigaseg.bench", ("gigaseg.cli", "gigaseg.bench"))):
                if (target == forbidden or target.startswith(forbidden + ".")) and not any(
                    m == a or m.startswith(a + ".") for a in allowed
                ):
                    bad.append(f"{where}: {m} imports {target}; the library never imports {forbidden}")
            if target.split(".")[0] in ("scripts", "benchmarks"):
                bad.append(f"{where}: {m} imports {target}")
    return bad


def test_private_names_stay_in_their_package():
    bad = _violations()
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", sorted(gigaseg.__all__))
def test_public_names_resolve(name):
    assert getattr(gigaseg, name) is not None


def test_train_is_the_function_whatever_the_import_order():
    """``from gigaseg import TrainConfig, train`` once bound the module ``gigaseg.train``."""
    import importlib

    importlib.import_module("gigaseg.training")  # a submodule import sets gigaseg.<its name> to the module
    from gigaseg import TrainConfig, train

    assert callable(train) and not isinstance(train, type(gigaseg))
    assert train.__name__ == "train" and TrainConfig.__name__ == "TrainConfig"
