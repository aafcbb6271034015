"""The Bazel BUILD file names every module and test of the tree (it is generated and checked)."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_build_file_is_current():
  result = subprocess.run([sys.executable, str(ROOT / "scripts" / "update_build.py"), "--check"],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stdout + result.stderr


def test_every_module_and_test_is_named_in_build():
  build = (ROOT / "BUILD").read_text()
  named = set(re.findall(r'"([^"]+\.py)"', build))
  files = [p for pattern in ("rljax/**/*.py", "experiments/**/*.py", "tests/test_*.py")
           for p in ROOT.glob(pattern) if "__pycache__" not in p.parts]
  missing = sorted(str(p.relative_to(ROOT)) for p in files if str(p.relative_to(ROOT)) not in named)
  assert not missing, f"not in BUILD: {missing}"
  for test in ROOT.glob("tests/test_*.py"):
    assert f'name = "{test.stem}"' in build, f"no py_test target for {test.name}"
