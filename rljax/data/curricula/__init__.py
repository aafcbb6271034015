# Copyright 2026 The rljax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Prompt curricula: pure state-in/state-out samplers over prompts or difficulty buckets.

RL with verifiable rewards learns nothing from a group of completions whose rewards are all equal:
group-relative advantages vanish. The samplers here decide which prompts ("arms": prompts of a
pool, or buckets such as difficulty levels) the trainer spends its samples on, and, for
Reinforce-Ada, how many samples each prompt gets.

Every sampler is a frozen, hashable dataclass of hyperparameters, a subclass of
:class:`Curriculum`, with three pure methods and a host-side batch collector that follow the
``rljax.data.curricula`` contract::

    sampler = make_sampler(name, num_arms, group_size=G, **hyperparameters)
    state = sampler.init()                                    # pytree of arrays
    arms, state = sampler.sample(state, key, batch_size)      # int32[batch_size]
    batch = sampler.collect(key, batch_size, G, draw)         # Collected, B = batch_size * G
    state = sampler.update(state, arms, rewards)              # rewards [n] or [n, group_size]

``collect`` calls ``draw(key, per_prompt) -> (host_sample, rewards, correct)`` to sample
completions of the chosen prompts: once with ``per_prompt = G`` by default, once a round for
Reinforce-Ada, whose batch carries its own advantages (``provides_advantages``).

States are ``NamedTuple`` pytrees of ``jax.Array`` (checkpoint them with orbax next to the
training state); ``sample`` is a deterministic function of ``(state, key)``; ``sample`` and
``update`` are jitted internally (hyperparameters and ``batch_size`` are static) and may also be
called inside a user's ``jax.jit``. Shapes are always checked; value checks (indices in range,
finite rewards, rewards in [0, 1] where required) run on concrete inputs only, so they read the
arrays back to the host: call the methods inside ``jax.jit`` to skip that synchronisation.

==================  ==========================================================================
name                rule
==================  ==========================================================================
``uniform``         uniform over arms (with or without replacement inside a batch)
``ucb`` (``ucb1``)  UCB1 index ``mean + c sqrt(2 ln T / n)``; top-``B`` arms per batch
``thompson``        Beta-Bernoulli posterior on each arm's pass rate; score ``theta`` or
                    ``theta (1 - theta)`` of a posterior draw
``exp3``            exponential weights on importance-weighted reward estimates, mixed with
                    ``gamma``-uniform exploration
``reinforce_ada``   uniform prompts; multi-round sampling per prompt until the ``pos`` /
                    ``balanced`` exit rule holds, then a fixed-size diverse group
``variance_aware``  MMR1 variance-aware sampling: half the batch proportional to
(``vas``)           ``0.8 * outcome variance + 0.2 * trajectory diversity``, half uniform
==================  ==========================================================================

:func:`dynamic_filter` is DAPO's dynamic sampling filter (drop groups whose rewards are all
equal) and reports what it dropped. :func:`reinforce_ada_advantages` is Reinforce-Ada's
global-statistics baseline. :func:`distinct_n` is a host-side trajectory-diversity score.

What the bandits optimise (``objective``): a curriculum wants prompts that give a learning
signal, not prompts the policy already solves, so the default objective is ``'variance'``
(prefer pass rates near 1/2). ``'reward'`` gives the classic reward-maximising bandit.

``CURRICULA`` maps each name (aliases included) to its class.

Modules: ``base`` (the contract and validation), ``uniform``, ``bandits`` (UCB1, Thompson, Exp3),
``variance_aware`` (MMR1), ``reinforce_ada``, ``filters`` (DAPO filter, distinct-n). The package
imports only jax and numpy.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from rljax.data.curricula.bandits import Exp3Sampler
from rljax.data.curricula.bandits import Exp3State
from rljax.data.curricula.bandits import group_signal
from rljax.data.curricula.bandits import ThompsonSampler
from rljax.data.curricula.bandits import ThompsonState
from rljax.data.curricula.bandits import UCBSampler
from rljax.data.curricula.bandits import UCBState
from rljax.data.curricula.base import Collected
from rljax.data.curricula.base import Curriculum
from rljax.data.curricula.base import UniformState
from rljax.data.curricula.filters import distinct_n
from rljax.data.curricula.filters import dynamic_filter
from rljax.data.curricula.reinforce_ada import AdaGroups
from rljax.data.curricula.reinforce_ada import AdaRoundState
from rljax.data.curricula.reinforce_ada import ReinforceAda
from rljax.data.curricula.reinforce_ada import reinforce_ada_advantages
from rljax.data.curricula.uniform import UniformSampler
from rljax.data.curricula.variance_aware import VarianceAwareSampler
from rljax.data.curricula.variance_aware import VarianceAwareState

__all__ = [
    "AdaGroups",
    "AdaRoundState",
    "CURRICULA",
    "Collected",
    "Curriculum",
    "Exp3Sampler",
    "Exp3State",
    "ReinforceAda",
    "SAMPLER_NAMES",
    "ThompsonSampler",
    "ThompsonState",
    "UCBSampler",
    "UCBState",
    "UniformSampler",
    "UniformState",
    "VarianceAwareSampler",
    "VarianceAwareState",
    "distinct_n",
    "dynamic_filter",
    "group_signal",
    "make_sampler",
    "provides_advantages",
    "reinforce_ada_advantages",
]

CURRICULA: dict[str, type[Curriculum]] = {
    "uniform": UniformSampler,
    "ucb": UCBSampler,
    "ucb1": UCBSampler,
    "thompson": ThompsonSampler,
    "exp3": Exp3Sampler,
    "reinforce_ada": ReinforceAda,
    "variance_aware": VarianceAwareSampler,
    "vas": VarianceAwareSampler,
}
SAMPLER_NAMES = tuple(CURRICULA)


def _curriculum_class(name: str) -> type[Curriculum]:
  if name not in CURRICULA:
    raise ValueError(f"name must be one of {SAMPLER_NAMES}, got {name!r}.")
  return CURRICULA[name]


def provides_advantages(name: str) -> bool:
  """Whether the curriculum ``name`` returns its own advantages from ``collect``.

  >>> provides_advantages('reinforce_ada'), provides_advantages('uniform')
  (True, False)
  """
  return _curriculum_class(name).provides_advantages


def make_sampler(name: str, num_arms: int, *, group_size: Optional[int] = None,
                 **kwargs: Any) -> Curriculum:
  """Builds a prompt sampler by name.

  Args:
    name: one of ``SAMPLER_NAMES``: ``'uniform'``, ``'ucb'`` (``'ucb1'``), ``'thompson'``,
      ``'exp3'``, ``'reinforce_ada'``, ``'variance_aware'`` (``'vas'``).
    num_arms: K, the number of prompts or buckets.
    group_size: the run's group size (completions per prompt in the update batch). It sets
      Reinforce-Ada's ``group_size`` hyperparameter; the other curricula ignore it. None keeps
      the class default.
    **kwargs: the sampler's hyperparameters (see its class).

  Returns:
    A frozen sampler with ``init``, ``sample``, ``update`` and ``collect``.

  >>> make_sampler('thompson', 8, objective='variance').objective
  'variance'
  >>> make_sampler('reinforce_ada', 8, group_size=6, samples_per_round=8).group_size
  6
  """
  cls = _curriculum_class(name)
  fields = {f.name for f in dataclasses.fields(cls)} - {"num_arms"}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ValueError(
        f"unknown hyperparameter(s) {unknown} for sampler {name!r}; valid: {sorted(fields)}.")
  if group_size is not None and "group_size" in fields:
    kwargs["group_size"] = group_size
  return cls(num_arms=num_arms, **kwargs)
