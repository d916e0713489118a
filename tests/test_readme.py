"""The README guides: its table of contents is its headings, and the CI workflow it links is a valid one."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def _slug(heading: str) -> str:  # GitHub's anchors: lower case, punctuation dropped, spaces as dashes
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_contents_are_the_headings():
    contents = README[README.index("## Contents"):].split("\n## ", 1)[0]
    listed = re.findall(r"^( *)- \[(.+)\]\(#(.+)\)$", contents, re.M)
    body = README[README.index("## Contents") + len("## Contents"):]
    headings = [(len(m.group(1)), m.group(2)) for m in re.finditer(r"^(##+) (.+)$", body, re.M) if len(m.group(1)) <= 3]
    assert [(2 if not indent else 3, text) for indent, text, _ in listed] == headings
    assert all(anchor == _slug(text) for _, text, anchor in listed)
    assert README.index("## Quick start") < README.index("## Contents")  # the first commands come first


def test_the_workflow_is_valid_and_runs_the_projects_ci():
    data = yaml.safe_load(WORKFLOW.read_text())
    triggers = data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    steps = data["jobs"]["test"]["steps"]
    assert any(s.get("uses", "").startswith("actions/checkout@") for s in steps)
    assert any(s.get("run", "").strip() == ".ci/run" for s in steps) and (ROOT / ".ci" / "run").is_file()
    assert "apt-get update" in " ".join(s.get("run", "") for s in steps)
    assert ".github/workflows/ci.yml" in README  # the README links it


@pytest.mark.skipif(shutil.which("check-jsonschema") is None and not (Path(sys.executable).parent / "check-jsonschema").exists(),
                    reason="check-jsonschema (the dev extra) is not installed")
def test_the_workflow_passes_githubs_own_schema():
    """check-jsonschema carries SchemaStore's GitHub-workflow schema, so this runs offline."""
    tool = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    done = subprocess.run([tool, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_readmes_workflow_snippets_pass_githubs_schema(tmp_path):
    tool = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    if not Path(tool).exists() and shutil.which(tool) is None:
        pytest.skip("check-jsonschema (the dev extra) is not installed")
    snippets = re.findall(r"```yaml\n(.*?)```", README, re.S)
    workflows = [s for s in snippets if "runs-on:" in s]
    assert workflows
    for i, text in enumerate(workflows):
        (tmp_path / f"w{i}.yml").write_text(text)
    done = subprocess.run([tool, "--builtin-schema", "vendor.github-workflows", *map(str, tmp_path.glob("w*.yml"))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
