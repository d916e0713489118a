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
