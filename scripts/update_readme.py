#!/usr/bin/env python3
"""Writes the README's launcher-estimator table from the registry (`rljax.train.estimators`).

The table sits between `<!-- estimators:begin -->` and `<!-- estimators:end -->`;
`tests/test_readme.py` fails when it differs from `estimator_table()`.
Usage: python scripts/update_readme.py [--check]
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- estimators:begin -->", "<!-- estimators:end -->"


def render(readme: str) -> str:
  """`readme` with the text between the markers replaced by the registry's table."""
  sys.path.insert(0, str(ROOT))
  from rljax.train.estimators import estimator_table  # pylint: disable=g-import-not-at-top
  head, rest = readme.split(BEGIN, 1)
  _, tail = rest.split(END, 1)
  return f"{head}{BEGIN}\n{estimator_table()}\n{END}{tail}"


def main(argv) -> int:
  path = ROOT / "README.md"
  text = path.read_text()
  if BEGIN not in text or END not in text:
    print(f"README.md has no {BEGIN} ... {END} block", file=sys.stderr)
    return 1
  new = render(text)
  if "--check" in argv:
    if new != text:
      print("README.md's estimator table is out of date: run python scripts/update_readme.py",
            file=sys.stderr)
      return 1
    return 0
  path.write_text(new)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
