# Copyright 2026 The rljax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Uniform prompt sampling, the baseline every curriculum is compared with.

This module imports only jax and numpy.
"""

from __future__ import annotations

import dataclasses

from rljax.data.curricula.base import Curriculum


@dataclasses.dataclass(frozen=True)
class UniformSampler(Curriculum):
  """Uniform prompt sampling, the baseline every curriculum is compared with.

  ``replace=False`` draws ``batch_size`` distinct arms uniformly at random (every subset of that
  size equally likely); ``replace=True`` draws them i.i.d. uniform. This is the base class's
  default behaviour (:class:`Curriculum`), which it adds the ``replace`` field to. ``update`` counts the
  reported groups; rewards are validated but do not change the sampling.

  Attributes:
    num_arms: K, the number of prompts or buckets.
    replace: draw with replacement inside a batch.

  >>> s = make_sampler('uniform', 10)
  >>> arms, state = s.sample(s.init(), jax.random.key(0), 4)
  >>> arms.shape, arms.dtype
  ((4,), dtype('int32'))
  """

  replace: bool = False
