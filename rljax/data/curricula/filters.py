# Copyright 2026 The rljax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Group filters and scores: DAPO's dynamic sampling filter and the distinct-n diversity score.

:func:`dynamic_filter` is DAPO's dynamic sampling filter ("DAPO: An Open-Source LLM
Reinforcement Learning System at Scale", Yu et al., arXiv 2503.14476): drop groups whose
rewards are all equal, and report what it dropped. :func:`distinct_n` is a host-side
trajectory-diversity score (the TDS of MMR1's variance-aware sampling, arXiv 2509.21268).

This module imports only jax and numpy.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rljax.data.curricula.base import _check_float
from rljax.data.curricula.base import _check_int
from rljax.data.curricula.base import _concrete


def distinct_n(tokens: Any, mask: Any = None, *, n: int = 3) -> np.ndarray:
  """Trajectory diversity of a group: distinct n-grams over all n-grams (host-side, NumPy).

  ``distinct-n = |unique n-grams in the group| / |n-grams in the group|``, counted over the
  real tokens of each completion only (``mask`` removes padding; the MMR1 code counts pad
  tokens, which makes padded groups look repetitive). It is 1 when no n-gram repeats and falls
  towards ``1 / G`` as the G completions become identical. A group with no n-gram at all
  (every completion shorter than n) scores 0.

  Args:
    tokens: int[G, L] (one group) or int[P, G, L] (P groups).
    mask: optional {0,1}[same shape], 1 on real tokens.
    n: n-gram length >= 1.

  Returns:
    float32 scalar, or float32[P].

  >>> float(distinct_n(np.array([[1, 2, 3, 4], [1, 2, 3, 4]]), n=2))
  0.5
  """
  n = _check_int("n", n, 1)
  tokens = np.asarray(tokens)
  if tokens.ndim not in (2, 3):
    raise ValueError(f"tokens must have shape [G, L] or [P, G, L], got {tokens.shape}.")
  if mask is None:
    mask = np.ones(tokens.shape, bool)
  mask = np.asarray(mask).astype(bool)
  if mask.shape != tokens.shape:
    raise ValueError(f"mask must have the shape of tokens {tokens.shape}, got {mask.shape}.")
  if tokens.ndim == 3:
    return np.array([distinct_n(t, m, n=n) for t, m in zip(tokens, mask)], np.float32)
  grams = []
  for row, row_mask in zip(tokens, mask):
    real = row[row_mask].tolist()
    grams.extend(tuple(real[i:i + n]) for i in range(len(real) - n + 1))
  if not grams:
    return np.float32(0.0)
  return np.float32(len(set(grams)) / len(grams))



def dynamic_filter(group_rewards: jax.Array, *, valid: Optional[jax.Array] = None,
                   atol: float = 0.0, max_groups: Optional[int] = None,
                   positive_threshold: float = 0.5) -> tuple[jax.Array, dict[str, jax.Array]]:
  """DAPO dynamic sampling: keep only groups whose rewards are not all equal.

  Rule ("DAPO: An Open-Source LLM Reinforcement Learning System at Scale", Yu et al.,
  arXiv 2503.14476, §3.2, "Dynamic Sampling"): over-sample and filter out the prompts whose
  accuracy is 0 or 1, i.e. whose group has zero reward variance and so zero group-relative
  advantage; keep generating until the batch is full of groups with ``0 < acc < 1``. Here a
  group is kept iff ``max_g r_g - min_g r_g > atol`` over its valid entries (at least two). With
  ``max_groups`` the first ``max_groups`` informative groups (in order) are kept and the rest are
  reported as over budget, the truncation DAPO applies when the buffer overflows.

  Nothing is dropped silently: ``stats`` partitions the dropped groups by reason,
  ``num_dropped = num_dropped_all_positive + num_dropped_all_negative + num_dropped_too_small
  + num_over_budget``.

  Args:
    group_rewards: float[n, G], one row per prompt.
    valid: optional bool[n, G], False on padding entries of ragged groups.
    atol: spread at or below which a group counts as zero-variance (>= 0).
    max_groups: optional cap on the number of kept groups (>= 0).
    positive_threshold: a dropped group whose common reward is ``> positive_threshold`` is
      counted as all-positive (solved), otherwise as all-negative.

  Returns:
    ``(keep, stats)``: keep is bool[n]; stats maps ``num_groups``, ``num_kept``,
    ``num_dropped``, ``fraction_dropped``, ``num_dropped_all_positive``,
    ``num_dropped_all_negative``, ``num_dropped_too_small``, ``num_over_budget`` to scalars.

  >>> keep, stats = dynamic_filter(jnp.array([[1., 0.], [1., 1.], [0., 0.]]))
  >>> keep.tolist(), int(stats['num_dropped'])
  ([True, False, False], 2)
  """
  group_rewards = jnp.asarray(group_rewards)
  if group_rewards.ndim != 2:
    raise ValueError(f"group_rewards must have shape [n, G], got {group_rewards.shape}.")
  atol = _check_float("atol", atol, 0.0, np.inf, hi_open=True)
  positive_threshold = _check_float("positive_threshold", positive_threshold, -np.inf, np.inf,
                                    lo_open=True, hi_open=True)
  if max_groups is not None:
    max_groups = _check_int("max_groups", max_groups, 0)
  if valid is None:
    valid = jnp.ones(group_rewards.shape, bool)
  valid = jnp.asarray(valid)
  if valid.shape != group_rewards.shape:
    raise ValueError(
        f"valid must have the shape of group_rewards {group_rewards.shape}, got {valid.shape}.")
  values = _concrete(group_rewards)
  if values is not None and not np.all(np.isfinite(values)):
    raise ValueError("group_rewards must be finite; got NaN or inf.")
  return _dynamic_filter(group_rewards.astype(jnp.float32), valid.astype(bool), atol,
                         max_groups, positive_threshold)


@functools.partial(jax.jit, static_argnums=(3,))
def _dynamic_filter(rewards, valid, atol, max_groups, positive_threshold):
  n = rewards.shape[0]
  hi = jnp.max(jnp.where(valid, rewards, -jnp.inf), axis=1)
  lo = jnp.min(jnp.where(valid, rewards, jnp.inf), axis=1)
  num_valid = jnp.sum(valid, axis=1)
  too_small = num_valid < 2
  informative = (~too_small) & (hi - lo > atol)
  if max_groups is None:
    keep = informative
  else:
    keep = informative & (jnp.cumsum(informative) <= max_groups)
  flat = (~too_small) & ~informative
  all_positive = flat & (hi > positive_threshold)
  as_i32 = lambda x: jnp.sum(x).astype(jnp.int32)
  num_kept = as_i32(keep)
  stats = {
      "num_groups": jnp.asarray(n, jnp.int32),
      "num_kept": num_kept,
      "num_dropped": n - num_kept,
      "fraction_dropped": (n - num_kept) / jnp.maximum(n, 1),
      "num_dropped_all_positive": as_i32(all_positive),
      "num_dropped_all_negative": as_i32(flat & ~all_positive),
      "num_dropped_too_small": as_i32(too_small),
      "num_over_budget": as_i32(informative & ~keep),
  }
  return keep, stats

