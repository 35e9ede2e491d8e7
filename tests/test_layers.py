"""The import layering declared in pyproject.toml ([tool.importlinter]): every import points downward, no cycles.

CI runs ``lint-imports`` before the tests (.ci/run); this runs it too, so that the README's test command alone
catches an upward import, and checks that no module of livecue escapes the contract.
"""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "livecue"


def contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def test_every_module_of_livecue_has_a_layer():
    """A new top-level module or package must be placed in the layers (else nothing checks its imports)."""
    layered = {name.strip() for layer in contracts()["layers"]["layers"] for name in re.split(r"[|:]", layer)}
    modules = {f"livecue.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    modules |= {f"livecue.{p.name}" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert modules - layered == set(), "add these to [tool.importlinter] layers in pyproject.toml"
    assert layered - modules == set(), "these layers name modules that do not exist"


def test_imports_point_downward():
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    out = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert f"Contracts: {len(contracts())} kept, 0 broken." in out.stdout  # every contract was checked
