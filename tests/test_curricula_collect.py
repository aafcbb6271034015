"""Tests for the curricula's batch collection: `collect`, `Collected`, `provides_advantages`,
`make_sampler(group_size=)`, the `CURRICULA` registry, and the package's docstring examples.

The Reinforce-Ada expectation is worked out by hand in the comments (exit rule, group choice,
row of each kept sample in the round-major concatenation), and a second test re-states the
harness's former row selection in NumPy on random draws.
"""

import doctest
import importlib
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rljax.data import curricula as cur
from rljax.sampling.rollout import Rollout

FIELDS = ("tokens", "prompt_mask", "completion_mask", "behavior_logp", "untruncated_logp",
          "lengths", "stopped")


def fake_rollout(codes):
  """A host Rollout whose every field identifies its row by `codes` int[B]."""
  codes = np.asarray(codes)
  col = codes[:, None]
  return Rollout(
      tokens=np.concatenate([col, col + 1], axis=1).astype(np.int32),
      prompt_mask=np.concatenate([col % 2, col % 3], axis=1).astype(np.int32),
      completion_mask=np.concatenate([col % 5, col % 7], axis=1).astype(np.int32),
      behavior_logp=-np.concatenate([col, 2 * col], axis=1).astype(np.float32),
      untruncated_logp=-np.concatenate([3 * col, col], axis=1).astype(np.float32),
      lengths=(codes % 11).astype(np.int32),
      stopped=codes % 2 == 0)


def assert_rollouts_equal(got, want):
  for f in FIELDS:
    a, b = np.asarray(getattr(got, f)), np.asarray(getattr(want, f))
    assert a.dtype == b.dtype and a.shape == b.shape, f
    np.testing.assert_array_equal(a, b, err_msg=f)


# ------------------------------------------------------------------------------------------------
# Registry, provides_advantages, make_sampler(group_size=).
# ------------------------------------------------------------------------------------------------


def test_registry_and_provides_advantages():
  assert tuple(cur.CURRICULA) == cur.SAMPLER_NAMES
  assert cur.CURRICULA["ucb1"] is cur.UCBSampler and cur.CURRICULA["vas"] is cur.VarianceAwareSampler
  for name, cls in cur.CURRICULA.items():
    assert issubclass(cls, cur.Curriculum)
    assert isinstance(cur.make_sampler(name, 8), cls)
    assert cur.provides_advantages(name) is (name == "reinforce_ada")
    assert cls.provides_advantages is (name == "reinforce_ada")
  assert cur.Curriculum.provides_advantages is False
  with pytest.raises(ValueError, match=r"name must be one of .*'bogus'"):
    cur.provides_advantages("bogus")


def test_make_sampler_group_size_rule():
  # Reinforce-Ada takes the run's group size as its group_size hyperparameter.
  ada = cur.make_sampler("reinforce_ada", 8, group_size=6, samples_per_round=8)
  assert ada.group_size == 6 and ada.samples_per_round == 8
  assert cur.make_sampler("reinforce_ada", 8).group_size == cur.ReinforceAda(8).group_size == 4
  # The others ignore it.
  for name in cur.SAMPLER_NAMES:
    if name != "reinforce_ada":
      assert cur.make_sampler(name, 8, group_size=5) == cur.make_sampler(name, 8)
  # Its own checks still apply to the value given.
  with pytest.raises(ValueError, match=r"samples_per_round must be >= group_size=16, got 8"):
    cur.make_sampler("reinforce_ada", 8, group_size=16)
  with pytest.raises(ValueError, match=r"group_size must be an integer >= 2, got 1"):
    cur.make_sampler("reinforce_ada", 8, group_size=1)
  # The run's group size and the curriculum's meet again in collect: they must agree.
  ada = cur.make_sampler("reinforce_ada", 8, group_size=4)
  with pytest.raises(ValueError,
                     match=r"group_size must equal ReinforceAda.group_size=4, got 8"):
    ada.collect(jax.random.key(0), 2, 8, lambda key, m: None)


# ------------------------------------------------------------------------------------------------
# Default collect.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in cur.SAMPLER_NAMES if n != "reinforce_ada"])
def test_default_collect_draws_once_with_the_key(name):
  num_prompts, group_size = 3, 4
  sampler = cur.make_sampler(name, 8)
  key = jax.random.key(7)
  calls = []
  sample = fake_rollout(np.arange(num_prompts * group_size))
  rewards = np.linspace(0, 1, num_prompts * group_size).astype(np.float32)
  correct = rewards > 0.5

  def draw(k, per_prompt):
    calls.append((k, per_prompt))
    return sample, rewards, correct

  got = sampler.collect(key, num_prompts, group_size, draw)
  assert len(calls) == 1 and calls[0][0] is key and calls[0][1] == group_size
  assert isinstance(got, cur.Collected)
  assert got.sample is sample and got.advantages is None and got.metrics == {}
  assert got.rewards.dtype == np.float32 and got.correct.dtype == np.bool_
  np.testing.assert_array_equal(got.rewards, rewards)
  np.testing.assert_array_equal(got.correct, correct)


def test_default_collect_checks_what_draw_returns():
  sampler = cur.make_sampler("uniform", 8)
  draw = lambda k, m: (None, np.zeros(5, np.float32), np.zeros(6, bool))
  with pytest.raises(ValueError, match=r"draw must return rewards of shape .* \(6,\), got \(5,\)"):
    sampler.collect(jax.random.key(0), 2, 3, draw)
  with pytest.raises(ValueError, match="num_prompts must be an integer >= 1"):
    sampler.collect(jax.random.key(0), 0, 3, draw)


# ------------------------------------------------------------------------------------------------
# Reinforce-Ada collect.
# ------------------------------------------------------------------------------------------------

# P = 3 prompts, n = 2, M = 2 samples a round, R = 3 rounds, rule 'balanced' (exit once the
# prompt has >= 1 positive and >= 1 negative), positive iff reward > 0.7.
ADA_REWARDS = {  # (round, prompt) -> rewards of the M samples; rows of exited prompts are 1.
    (0, 0): [1, 0], (0, 1): [0, 0], (0, 2): [1, 1],
    (1, 0): [1, 1], (1, 1): [0, 1], (1, 2): [1, 1],
    (2, 0): [1, 1], (2, 1): [1, 1], (2, 2): [1, 1],
}


def code(r, p, j):
  return 100 * r + 10 * p + j


def test_reinforce_ada_collect_hand_example():
  p, n, m = 3, 2, 2
  ada = cur.make_sampler("reinforce_ada", 10, group_size=n, samples_per_round=m, max_rounds=3)
  key = jax.random.key(3)
  keys = []

  def draw(k, per_prompt):
    assert per_prompt == m
    r = len(keys)
    keys.append(k)
    codes = [code(r, q, j) for q in range(p) for j in range(m)]
    rewards = np.array([ADA_REWARDS[r, q][j] for q in range(p) for j in range(m)], np.float32)
    return fake_rollout(codes), rewards, rewards > 0.5

  got = ada.collect(key, p, n, draw)
  # Prompt 0 exits in round 0, prompt 1 in round 1, prompt 2 (all positive) never: 3 rounds.
  assert len(keys) == 3
  for r, k in enumerate(keys):
    np.testing.assert_array_equal(jax.random.key_data(k),
                                  jax.random.key_data(jax.random.fold_in(key, r)))
  # Groups, positives first in draw order, then negatives:
  #   prompt 0: slots (round 0, j 0) = 1 and (0, 1) = 0; pool mean 1/2.
  #   prompt 1: the positive (1, 1) = 1, then the first negative (0, 0) = 0; pool mean 1/4.
  #   prompt 2: no negative, so two positives (0, 0), (0, 1); pool mean 1, advantage 0.
  kept = [(0, 0, 0), (0, 0, 1), (1, 1, 1), (0, 1, 0), (0, 2, 0), (0, 2, 1)]
  assert_rollouts_equal(got.sample, fake_rollout([code(*rpj) for rpj in kept]))
  np.testing.assert_array_equal(got.rewards, [1, 0, 1, 0, 1, 1])
  np.testing.assert_allclose(got.advantages, [0.5, -0.5, 0.75, -0.25, 0.0, 0.0], atol=1e-7)
  assert got.rewards.dtype == got.advantages.dtype == np.float32
  assert got.advantages.shape == got.rewards.shape == got.correct.shape == (p * n,)
  np.testing.assert_array_equal(got.correct, [True, False, True, False, True, True])
  # 12 samples drawn (6 + 4 + 2), 8 of them correct; the 6 rows of exited prompts in rounds 1
  # and 2 are all "correct" and must not count.
  assert got.metrics == {
      "ada/num_prompts": 3.0, "ada/num_exited": 2.0, "ada/num_fallback": 1.0,
      "ada/num_samples_drawn": 12.0, "ada/sample_budget": 18.0, "ada/num_samples_kept": 6.0,
      "ada/num_zero_variance_groups": 1.0, "ada/rounds_used": 3.0,
      "ada/drawn_pass_rate": 8 / 12}


def harness_selection(ada, key, p, draw):
  """The harness's former Reinforce-Ada batch, re-stated on top of the round loop."""
  m = ada.samples_per_round
  rounds, drawn_correct = [], []

  def draw_rewards(round_key, active):
    sample, rewards, correct = draw(round_key, m)
    rounds.append(sample)
    drawn_correct.append(correct.reshape(p, m))
    return rewards.reshape(p, m)

  groups, stats, round_state = ada._collect_rounds(key, p, draw_rewards)
  index = np.asarray(groups.sample_index)
  r, j = index // m, index % m
  rows = r * p * m + np.arange(p)[:, None] * m + j
  cat = {f: np.concatenate([np.asarray(getattr(h, f)) for h in rounds]) for f in FIELDS}
  picked = Rollout(**{f: v[rows.reshape(-1)] for f, v in cat.items()})
  correct = np.concatenate(drawn_correct, axis=1)[np.arange(p)[:, None], index].reshape(-1)
  metrics = {f"ada/{k}": float(v) for k, v in stats.items()}
  all_correct = np.concatenate(drawn_correct, axis=1)
  drawn = np.asarray(round_state.drawn)[:, :all_correct.shape[1]]
  metrics["ada/drawn_pass_rate"] = float((all_correct & drawn).sum() / max(drawn.sum(), 1))
  return (picked, np.asarray(groups.rewards, np.float32).reshape(-1), correct,
          np.asarray(groups.advantages, np.float32).reshape(-1), metrics)


@pytest.mark.parametrize("rule, scale", [("balanced", "none"), ("pos", "std")])
def test_reinforce_ada_collect_matches_the_harness_selection(rule, scale):
  p = 16
  ada = cur.make_sampler("reinforce_ada", 100, rule=rule, advantage_scale=scale)
  m = ada.samples_per_round
  pass_rate = np.random.default_rng(0).beta(0.5, 0.5, p)

  def make_draw(seed):
    rng = np.random.default_rng(seed)
    calls = []

    def draw(k, per_prompt):
      codes = 1000 * len(calls) + np.arange(p * per_prompt)
      calls.append(k)
      rewards = (rng.random(p * per_prompt) < np.repeat(pass_rate, per_prompt))
      correct = rng.random(p * per_prompt) < 0.5  # Not the rewards: checks its own selection.
      return fake_rollout(codes), rewards.astype(np.float32), correct

    return draw

  key = jax.random.key(1)
  got = ada.collect(key, p, ada.group_size, make_draw(5))
  want = harness_selection(ada, key, p, make_draw(5))
  assert_rollouts_equal(got.sample, want[0])
  for a, b in zip((got.rewards, got.correct, got.advantages), want[1:4]):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)
  assert got.metrics == want[4]


# ------------------------------------------------------------------------------------------------
# Docstring examples of every module of the package.
# ------------------------------------------------------------------------------------------------

MODULES = ["rljax.data.curricula"] + sorted(
    m.name for m in pkgutil.iter_modules(cur.__path__, "rljax.data.curricula."))


def test_modules_are_discovered():
  assert "rljax.data.curricula.bandits" in MODULES and "rljax.data.curricula.base" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  module = importlib.import_module(name)
  globs = {"make_sampler": cur.make_sampler, "jax": jax, "jnp": jnp, "np": np}
  result = doctest.testmod(module, extraglobs=globs, optionflags=doctest.NORMALIZE_WHITESPACE,
                           verbose=False, report=True)
  assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
