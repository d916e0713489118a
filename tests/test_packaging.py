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


def imports() -> dict[str, set[str]]:
    """module -> the cnnrun modules it imports, at the top or inside a function."""
    import ast

    modules = {p.stem: p for p in (ROOT / "cnnrun").glob("*.py")}
    graph = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "cnnrun":
                graph[name] |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cnnrun."):
                graph[name].add(node.module.split(".")[1])
        graph[name] -= {name, "__init__"}
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
    assert not graph["train"] & {"loggers", "debug", "explain", "cli"}  # edges attach as hooks
