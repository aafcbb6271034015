"""Tests for the estimator-comparison script's helpers (`experiments/compare.py`)."""

import numpy as np

from experiments import compare


def test_moving_average_keeps_the_ends():
  # A constant stays constant, ends included (a zero-padded window would pull them down).
  np.testing.assert_allclose(compare.moving_average(np.full(60, 0.7), 3), np.full(60, 0.7))
  x = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
  # By hand: the ends average the two points their window holds, the rest three.
  expected = [1.5, 7 / 3, 14 / 3, 28 / 3, 56 / 3, 24.0]
  np.testing.assert_allclose(compare.moving_average(x, 3), expected)
  np.testing.assert_allclose(compare.moving_average(x, 1), x)
  assert compare.moving_average(x, 4).shape == x.shape
