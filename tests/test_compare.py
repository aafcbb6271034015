"""Tests for the estimator-comparison script's helpers (`experiments/compare.py`)."""

import numpy as np
import pytest

from experiments import compare
from experiments import config as config_lib


def test_moving_average_keeps_the_ends():
  # A constant stays constant, ends included (a zero-padded window would pull them down).
  np.testing.assert_allclose(compare.moving_average(np.full(60, 0.7), 3), np.full(60, 0.7))
  x = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
  # By hand: the ends average the two points their window holds, the rest three.
  expected = [1.5, 7 / 3, 14 / 3, 28 / 3, 56 / 3, 24.0]
  np.testing.assert_allclose(compare.moving_average(x, 3), expected)
  np.testing.assert_allclose(compare.moving_average(x, 1), x)
  assert compare.moving_average(x, 4).shape == x.shape


def test_estimator_suffixes_set_the_correction_and_the_anchor():
  base = config_lib.Config().validate()  # As the script builds it (unset defaults filled in).
  cfg = compare.run_config(base, 'grpo+tis')
  assert (cfg.estimator, cfg.is_correction, cfg.old_logp) == ('grpo', 'tis', 'trainer')
  cfg = compare.run_config(base, 'cispo+behavior+mis')
  assert (cfg.estimator, cfg.is_correction, cfg.old_logp) == ('cispo', 'mis', 'sampler')
  assert compare.run_config(base, 'topr') == base.replace(estimator='topr')
  with pytest.raises(ValueError, match=r"'grpo\+foo' has suffix \+foo"):
    compare.run_config(base, 'grpo+foo')
  with pytest.raises(ValueError, match="'nope' is not an estimator"):
    compare.run_config(base, 'nope+tis')
  # TOPR corrects the sampling mismatch itself: no IS weights on top.
  with pytest.raises(ValueError, match=r"'topr\+tis'.*is_correction"):
    compare.run_config(base, 'topr+tis')
