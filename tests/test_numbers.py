"""scripts/check_numbers.py: the README's and the docs' numbers are their artefacts' numbers.

The script is run as CI would run it, then on copies with one number changed (in a doc, then in
an artefact), which must fail and say where.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

SCRIPT = ROOT / "scripts" / "check_numbers.py"


def _checker():
    """The script as a module (registered in sys.modules, which its dataclass needs)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_numbers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_numbers"] = module
    spec.loader.exec_module(module)
    return module


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_every_published_number_matches_its_artefact():
    result = _run()
    assert result.returncode == 0, result.stderr


def test_a_changed_number_in_the_readme_fails(tmp_path):
    readme = (ROOT / "README.md").read_text()
    exactness = json.loads((ROOT / "benchmarks/exactness/exactness.json").read_text())
    checker = _checker()
    quoted = checker.sci(exactness["max_rel_grad_error"]["float64"])
    assert quoted in readme
    copy = tmp_path / "README.md"
    copy.write_text(readme.replace(quoted, "1.0e-15"))
    result = _run("--replace", f"README.md={copy}")
    assert result.returncode == 1
    assert "README.md: expected" in result.stderr and "1.0e-15" in result.stderr, result.stderr


def test_a_changed_artefact_fails(tmp_path):
    copy = tmp_path / "summary.json"
    summary = json.loads((ROOT / "benchmarks/demo/summary.json").read_text())
    summary["wall_seconds"] += 60
    copy.write_text(json.dumps(summary))
    result = _run("--replace", f"benchmarks/demo/summary.json={copy}")
    assert result.returncode == 1
    assert "from benchmarks/demo/summary.json" in result.stderr, result.stderr


def test_a_missing_artefact_fails(tmp_path):
    result = _run("--replace", f"benchmarks/exactness/exactness.json={tmp_path / 'absent.json'}")
    assert result.returncode == 1
    assert "cannot read the number from the artefact" in result.stderr


def test_every_artefact_is_committed():
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    checker = _checker()
    listed = subprocess.run([git, "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    tracked = set(listed.split())
    sources = set()
    for claim in checker.CLAIMS:
        paths = sorted(ROOT.glob(claim.source)) if any(c in claim.source for c in "*?[") else [ROOT / claim.source]
        sources.update(p.relative_to(ROOT).as_posix() for p in paths)
    assert sources and not sources - tracked, f"artefacts that git does not track: {sorted(sources - tracked)}"


def test_a_new_number_in_the_readme_without_a_claim_fails(tmp_path):
    copy = tmp_path / "README.md"
    copy.write_text((ROOT / "README.md").read_text() + "\nIt predicts at 99.9 MP/s on any laptop.\n")
    result = _run("--replace", f"README.md={copy}")
    assert result.returncode == 1
    assert "'99.9' has no claim" in result.stderr, result.stderr


def test_committed_records_name_no_folder_of_this_machine():
    """Run records (JSON, logs, READMEs) name paths relative to the checkout (runs/..., ../shared/...),
    never the folders of the machine they were made on: the checkout's parent is checked, which on
    the machine that wrote a record is where its absolute paths would point."""
    git = shutil.which("git")
    parent = ROOT.resolve().parent
    if git is None or not (ROOT / ".git").exists() or parent == parent.parent:
        pytest.skip("not a git checkout, or one at the file system's root")
    listed = subprocess.run([git, "ls-files", "results", "benchmarks", "docs", "README.md"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    needle = f"{parent}/".encode()
    found = []
    for name in filter(None, listed):
        data = (ROOT / name).read_bytes() if (ROOT / name).is_file() else b""
        if b"\0" not in data[:8192] and needle in data:  # text files only: checkpoints keep their training paths
            found.append(name)
    assert not found, f"{len(found)} committed records name {needle.decode()}: {found[:5]}; write paths relative to " \
                      "the checkout instead"
