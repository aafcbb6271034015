"""The README's generated parts match the code: the launcher's estimator table and the layout."""

import pathlib
import re
import subprocess
import sys

from rljax.train import estimators as est_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_estimator_table_is_the_registry():
  result = subprocess.run([sys.executable, str(ROOT / "scripts" / "update_readme.py"), "--check"],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  assert est_lib.estimator_table() in README
  for name in est_lib.ESTIMATORS:
    assert f"| {name} |" in README


def _layout_folders():
  section = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
  return re.findall(r"^\| `([^`]+/)`", section, flags=re.M)


def test_layout_table_matches_the_tree():
  named = _layout_folders()
  assert named, "no layout table"
  for folder in named:
    assert (ROOT / folder).is_dir(), f"README layout names {folder}, which does not exist"
  packages = {str(p.parent.relative_to(ROOT)) + "/" for p in ROOT.glob("rljax/**/__init__.py")}
  packages.discard("rljax/")
  top = {"experiments/", "benchmarks/", "colabs/", "tests/", "scripts/"}
  missing = sorted((packages | top) - set(named))
  assert not missing, f"folders missing from the README layout table: {missing}"
