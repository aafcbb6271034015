"""Runs the docstring examples of every module under rljax/_src (they are part of the docs)."""

import doctest
import importlib
import pkgutil

import pytest

import rljax._src

MODULES = sorted(m.name for m in pkgutil.iter_modules(rljax._src.__path__, "rljax._src."))


def test_modules_are_discovered():
  assert "rljax._src.reinforce" in MODULES and "rljax._src.aggregation" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  module = importlib.import_module(name)
  result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False,
                           report=True)
  assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
