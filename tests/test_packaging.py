"""The package ships every config folder, declared so that setuptools builds without warnings."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_folder_is_a_declared_package():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(setup["packages"])
    folders = {"cnnrun.conf" + "".join(f".{part}" for part in d.relative_to(ROOT / "conf").parts)
               for d in (ROOT / "conf").rglob("*") if d.is_dir() and any(d.glob("*.yaml"))} | {"cnnrun.conf"}
    assert folders <= declared, sorted(folders - declared)
    assert setup["package-dir"]["cnnrun.conf"] == "conf"


def test_every_package_folder_is_declared():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "cnnrun").rglob("__init__.py")}
    assert folders == {p for p in setup["packages"] if p != "cnnrun.conf" and not p.startswith("cnnrun.conf.")}


def imports() -> dict[str, set[str]]:
    """module (dotted, below cnnrun: `record.layout`; a package by its name) -> the cnnrun modules it imports,
    at the top or inside a function."""
    import ast

    def name(path: Path) -> str:
        parts = path.relative_to(ROOT / "cnnrun").with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"

    modules = {name(p): p for p in (ROOT / "cnnrun").rglob("*.py")}
    graph = {m: set() for m in modules}
    for mod, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "cnnrun":
                base = node.module.partition(".")[2]
                for a in node.names:  # `from cnnrun.record import layout` imports the module record.layout
                    sub = f"{base}.{a.name}" if base else a.name
                    graph[mod].add(sub if sub in modules else base)
            elif isinstance(node, ast.Import):
                graph[mod] |= {a.name.partition(".")[2] for a in node.names
                               if a.name.startswith("cnnrun.") and a.name.partition(".")[2] in modules}
        graph[mod] -= {mod, "__init__", ""}
    return graph


def test_imports_form_a_dag_with_the_commands_on_top():
    graph = imports()
    done, path = set(), []

    def visit(m):  # depth first; a module met again on the current path closes a circle
        if m in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        path.append(m)
        for n in sorted(graph.get(m, ())):
            visit(n)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)
    assert {m for m, deps in graph.items() if "cli" in deps} == {"__main__"}  # nothing reaches up to the command line
    assert not graph["training.train"] & {"hooks.loggers", "hooks.debug", "hooks.explain", "hooks.smoke", "cli"}  # edges: hooks
    # Every module has a floor (the README's table): a folder's modules share theirs; console, backend and signals
    # are floors of their own, and record/layout.py, which imports nothing, is the ground any module may stand on.
    order = ["__main__", "cli", "commands", "training", "console", "hooks", "record", "models", "data", "config",
             "backend", "signals", "record.layout"]
    rank = {m: order.index(m if m in order else m.split(".")[0]) for m in graph if m != "__init__"}
    assert not graph["record.layout"]
    upward = [(m, d) for m, deps in graph.items() for d in deps if m in rank and d in rank and rank[d] < rank[m]]
    assert not upward, upward  # each module imports only modules on the floors below it


def test_every_extra_a_message_names_is_one_pyproject_has():
    """One table of extras (cnnrun/config/extras.py) gives every pip line; it matches pyproject.toml's."""
    import re
    import tomllib

    from cnnrun.config.extras import EXTRAS, pip

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(declared) and set(declared) - set(EXTRAS) <= {"dev", "bench"}
    assert pip("hub") == "pip install 'cnnrun[hub]'"
    source = "".join(p.read_text() for p in (ROOT / "cnnrun").rglob("*.py") if p.name != "extras.py")
    assert not re.search(r"pip install ['\"]cnnrun\[", source)  # spelled in one place only
