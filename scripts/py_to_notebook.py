#!/usr/bin/env python3
"""Builds a notebook (without outputs) from a percent-format script: `# %%` starts a code cell,
`# %% [markdown]` a markdown cell whose lines are `# `-prefixed. Usage: py_to_notebook.py IN OUT"""

import sys

import nbformat


def convert(text):
  cells, kind, lines = [], None, []

  def flush():
    body = "\n".join(lines).strip("\n")
    if kind == "markdown":
      body = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in body.splitlines())
      cells.append(nbformat.v4.new_markdown_cell(body))
    elif kind == "code" and body:
      cells.append(nbformat.v4.new_code_cell(body))

  for line in text.splitlines():
    if line.startswith("# %%"):
      flush()
      kind, lines = ("markdown" if "[markdown]" in line else "code"), []
    else:
      lines.append(line)
  flush()
  nb = nbformat.v4.new_notebook(cells=cells)
  nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
  nb.metadata["language_info"] = {"name": "python"}
  return nb


if __name__ == "__main__":
  with open(sys.argv[1]) as f:
    nbformat.write(convert(f.read()), sys.argv[2])
