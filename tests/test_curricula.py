"""Tests for rljax.data.curricula.

Expected values are computed independently: by hand in the comments, or with NumPy re-statements
of the published rules. The simulations use a pool of prompts with known Bernoulli pass rates and
host-side (NumPy) reward draws, so each sampler's jitted functions compile once per shape.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rljax.data import curricula as cur

# A pool where most groups carry no learning signal: 16 prompts never solved, 16 always solved,
# 8 with pass rates in [0.3, 0.7].
POOL = np.array([0.0] * 16 + [1.0] * 16 + [0.3, 0.4, 0.5, 0.6, 0.7, 0.5, 0.4, 0.6], np.float32)
INFORMATIVE = POOL * (1 - POOL) > 0
K, B, G = len(POOL), 4, 8


def uniform_zero_variance_fraction(pass_rates, group_size):
  """Exact P(all G Bernoulli rewards equal) averaged over prompts drawn uniformly."""
  p = np.asarray(pass_rates, np.float64)
  return float(np.mean(p**group_size + (1 - p)**group_size))


def simulate(sampler, pass_rates, steps, batch_size, group_size, seed=0):
  """Runs sample -> Bernoulli rewards -> update; returns (state, arms[T, B], rewards[T, B, G])."""
  rng = np.random.default_rng(seed)
  keys = jax.random.split(jax.random.key(seed), steps)
  state = sampler.init()
  all_arms, all_rewards = [], []
  for t in range(steps):
    arms, state = sampler.sample(state, keys[t], batch_size)
    a = np.asarray(arms)
    r = (rng.random((batch_size, group_size)) < pass_rates[a][:, None]).astype(np.float32)
    state = sampler.update(state, arms, r)
    all_arms.append(a)
    all_rewards.append(r)
  return state, np.stack(all_arms), np.stack(all_rewards)


def zero_variance(rewards):
  return rewards.max(-1) == rewards.min(-1)


# ------------------------------------------------------------------------------------------------
# Factory and validation.
# ------------------------------------------------------------------------------------------------


def test_factory_names_and_errors():
  for name in ("uniform", "ucb", "ucb1", "thompson", "exp3", "reinforce_ada", "variance_aware",
               "vas"):
    s = cur.make_sampler(name, 5)
    assert s.num_arms == 5
    assert hash(s) == hash(cur.make_sampler(name, 5))  # Static, hashable hyperparameters.
  with pytest.raises(ValueError, match="name must be one of"):
    cur.make_sampler("bogus", 5)
  with pytest.raises(ValueError, match="unknown hyperparameter.*'gama'"):
    cur.make_sampler("exp3", 5, gama=0.1)


@pytest.mark.parametrize("name, kwargs, match", [
    ("uniform", dict(num_arms=0), "num_arms"),
    ("ucb", dict(num_arms=3, discount=0.0), "discount"),
    ("ucb", dict(num_arms=3, exploration=-1.0), "exploration"),
    ("ucb", dict(num_arms=3, objective="regret"), "objective"),
    ("thompson", dict(num_arms=3, prior_alpha=0.0), "prior_alpha"),
    ("thompson", dict(num_arms=3, objective="informative"), "objective"),
    ("exp3", dict(num_arms=3, gamma=0.0), "gamma"),
    ("exp3", dict(num_arms=3, eta=-1.0), "eta"),
    ("vas", dict(num_arms=3, mix=1.5), "mix"),
    ("vas", dict(num_arms=3, variance_weight=0.0, diversity_weight=0.0), "variance_weight"),
    ("vas", dict(num_arms=3, normalize="rank"), "normalize"),
    ("vas", dict(num_arms=3, momentum=1.0), "momentum"),
    ("reinforce_ada", dict(num_arms=3, rule="neg"), "rule"),
    ("reinforce_ada", dict(num_arms=3, group_size=4, samples_per_round=2), "samples_per_round"),
    ("reinforce_ada", dict(num_arms=3, group_size=1), "group_size"),
    ("reinforce_ada", dict(num_arms=3, max_rounds=0), "max_rounds"),
])
def test_constructor_validation(name, kwargs, match):
  num_arms = kwargs.pop("num_arms")
  with pytest.raises(ValueError, match=match):
    cur.make_sampler(name, num_arms, **kwargs)


def test_call_validation():
  s = cur.make_sampler("ucb", 3, objective="variance")
  state = s.init()
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="batch_size=4 exceeds num_arms=3"):
    s.sample(state, key, 4)
  with pytest.raises(ValueError, match="batch_size"):
    s.sample(state, key, 0)
  with pytest.raises(ValueError, match="arm_indices must lie in"):
    s.update(state, jnp.array([0, 3]), jnp.ones((2, 4)))
  with pytest.raises(ValueError, match="arm_indices must be a 1-D integer"):
    s.update(state, jnp.array([0.0, 1.0]), jnp.ones((2, 4)))
  with pytest.raises(ValueError, match=r"rewards must have shape \[n\]"):
    s.update(state, jnp.array([0, 1]), jnp.ones((3, 4)))
  with pytest.raises(ValueError, match="group_size >= 2 for objective='variance'"):
    s.update(state, jnp.array([0, 1]), jnp.ones((2,)))
  with pytest.raises(ValueError, match=r"rewards must lie in \[0, 1\]"):
    s.update(state, jnp.array([0, 1]), 2.0 * jnp.ones((2, 4)))
  with pytest.raises(ValueError, match="finite"):
    s.update(state, jnp.array([0, 1]), jnp.full((2, 4), jnp.nan))
  with pytest.raises(ValueError, match="state must be a UCBState"):
    s.sample(cur.make_sampler("exp3", 3).init(), key, 1)


def test_group_signal_hand_values():
  rewards = jnp.array([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.5, 0.5, 1.0, 0.0]])
  # Means: 0.25, 1, 0.5. Population variances: 0.1875, 0, 0.125 -> times 4.
  np.testing.assert_allclose(cur.group_signal(rewards, "reward"), [0.25, 1.0, 0.5])
  np.testing.assert_allclose(cur.group_signal(rewards, "variance"), [0.75, 0.0, 0.5])
  np.testing.assert_allclose(cur.group_signal(rewards, "informative"), [1.0, 0.0, 1.0])


# ------------------------------------------------------------------------------------------------
# Pytree states: flatten round trip, orbax checkpoint, determinism from the key.
# ------------------------------------------------------------------------------------------------


def _all_states():
  return {
      "uniform": cur.make_sampler("uniform", 4).init(),
      "ucb": cur.make_sampler("ucb", 4).init(),
      "thompson": cur.make_sampler("thompson", 4).init(),
      "exp3": cur.make_sampler("exp3", 4).init(),
      "vas": cur.make_sampler("vas", 4).init(),
      "ada_prompts": cur.make_sampler("reinforce_ada", 4).init(),
      "ada_rounds": cur.ReinforceAda(4).begin(3),
  }


def test_state_pytree_round_trip():
  for name, state in _all_states().items():
    leaves, treedef = jax.tree_util.tree_flatten(state)
    assert leaves and all(isinstance(x, jax.Array) for x in leaves), name
    rebuilt = jax.tree_util.tree_unflatten(treedef, [np.asarray(x) for x in leaves])
    assert type(rebuilt) is type(state), name
    for a, b in zip(jax.tree_util.tree_leaves(rebuilt), leaves):
      np.testing.assert_array_equal(a, b)
      assert np.asarray(a).dtype == b.dtype


def test_state_orbax_round_trip(tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  s = cur.make_sampler("ucb", 4, objective="reward")
  states = _all_states()
  states["ucb"] = s.update(states["ucb"], jnp.array([1, 3]), jnp.array([0.25, 1.0]))
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / "curricula", states)
  checkpointer.wait_until_finished()
  restored = checkpointer.restore(tmp_path / "curricula", states)
  for name in states:
    assert type(restored[name]) is type(states[name])
    jax.tree_util.tree_map(np.testing.assert_array_equal, restored[name], states[name])
  np.testing.assert_allclose(restored["ucb"].value_sums, [0.0, 0.25, 0.0, 1.0])


def check_sampling_is_a_function_of_state_and_key(s):
  state = s.init()
  a1, st1 = s.sample(state, jax.random.key(3), B)
  a2, st2 = s.sample(state, jax.random.key(3), B)
  np.testing.assert_array_equal(a1, a2)
  jax.tree_util.tree_map(np.testing.assert_array_equal, st1, st2)
  draws = {tuple(np.asarray(s.sample(state, jax.random.key(i), B)[0])) for i in range(6)}
  assert len(draws) > 1  # The key matters (UCB: random tie-breaking among untried arms).


@pytest.mark.parametrize("name", ["uniform", "reinforce_ada"])
def test_sampling_is_a_function_of_state_and_key(name):
  # The other samplers are checked inside their simulation tests (one compilation each).
  check_sampling_is_a_function_of_state_and_key(cur.make_sampler(name, K))


def test_sample_and_update_inside_user_jit():
  s = cur.make_sampler("ucb", 5, objective="reward")

  @jax.jit
  def step(state, key, rewards):
    arms, state = s.sample(state, key, 2)
    return arms, s.update(state, arms, rewards)

  state = s.init()
  rewards = jnp.array([0.5, 1.0])
  arms_jit, state_jit = step(state, jax.random.key(1), rewards)
  arms, _ = s.sample(state, jax.random.key(1), 2)
  np.testing.assert_array_equal(arms_jit, arms)
  jax.tree_util.tree_map(np.testing.assert_array_equal, state_jit, s.update(state, arms, rewards))


# ------------------------------------------------------------------------------------------------
# Uniform.
# ------------------------------------------------------------------------------------------------


def test_uniform_distinct_and_counts():
  s = cur.make_sampler("uniform", 6)
  state = s.init()
  counts = np.zeros(6)
  for i in range(300):
    arms, state = s.sample(state, jax.random.key(i), 3)
    a = np.asarray(arms)
    assert len(set(a.tolist())) == 3
    counts += np.bincount(a, minlength=6)
  # 900 draws, expected 150 each, sd ~ 10.6.
  assert np.all(np.abs(counts - 150) < 50), counts
  state = s.update(state, jnp.array([2, 2, 5]), jnp.ones(3))
  np.testing.assert_array_equal(state.pulls, [0, 0, 2, 0, 0, 1])
  assert int(state.step) == 1


# ------------------------------------------------------------------------------------------------
# UCB1.
# ------------------------------------------------------------------------------------------------


def test_ucb_update_and_index_hand_values():
  s = cur.make_sampler("ucb", 3, objective="reward")
  state = s.update(s.init(), jnp.array([0, 1, 2]), jnp.array([1.0, 0.0, 0.5]))
  state = s.update(state, jnp.array([0, 0]), jnp.array([0.0, 1.0]))
  np.testing.assert_allclose(state.counts, [3, 1, 1])
  np.testing.assert_allclose(state.value_sums, [2.0, 0.0, 0.5])
  np.testing.assert_array_equal(state.pulls, [3, 1, 1])
  t = 5
  expected = np.array([2 / 3 + np.sqrt(2 * np.log(t) / 3), np.sqrt(2 * np.log(t)),
                       0.5 + np.sqrt(2 * np.log(t))])  # 1.7025, 1.7941, 2.2941
  np.testing.assert_allclose(s.index(state), expected, rtol=1e-6)
  arms, _ = s.sample(state, jax.random.key(0), 2)
  np.testing.assert_array_equal(arms, [2, 1])

  # replace=True: hallucinated pulls. NumPy re-statement of the rule.
  counts, sums = np.array([3.0, 1, 1]), np.array([2.0, 0, 0.5])
  pending, picks = np.zeros(3), []
  for _ in range(3):
    n = counts + pending
    idx = sums / counts + np.sqrt(2 * np.log(n.sum()) / n)
    picks.append(int(np.argmax(idx)))
    pending[picks[-1]] += 1
  assert picks == [2, 1, 2]
  s_rep = cur.make_sampler("ucb", 3, objective="reward", replace=True)
  arms, _ = s_rep.sample(cur.UCBState(*state), jax.random.key(0), 3)
  np.testing.assert_array_equal(arms, picks)

  # Discounted: n <- 0.5 n + new, S <- 0.5 S + new.
  s_d = cur.make_sampler("ucb", 3, objective="reward", discount=0.5)
  st = s_d.update(s_d.init(), jnp.array([0, 1, 2]), jnp.array([1.0, 0.0, 0.5]))
  st = s_d.update(st, jnp.array([0, 0]), jnp.array([0.0, 1.0]))
  np.testing.assert_allclose(st.counts, [2.5, 0.5, 0.5])
  np.testing.assert_allclose(st.value_sums, [1.5, 0.0, 0.25])

  # objective='variance': one group [1, 0, 0, 0] has signal 4 * 0.1875 = 0.75.
  s_v = cur.make_sampler("ucb", 3)
  st = s_v.update(s_v.init(), jnp.array([1]), jnp.array([[1.0, 0.0, 0.0, 0.0]]))
  np.testing.assert_allclose(st.value_sums, [0.0, 0.75, 0.0])


def test_ucb_tries_every_arm_once_first():
  s = cur.make_sampler("ucb", 5, objective="reward")
  state, seen = s.init(), []
  for i in range(5):
    arms, state = s.sample(state, jax.random.key(i), 1)
    seen.append(int(arms[0]))
    state = s.update(state, arms, jnp.ones(1))  # Even a maximal reward does not cause a repeat.
  assert sorted(seen) == [0, 1, 2, 3, 4]
  s_rep = cur.make_sampler("ucb", 3, objective="reward", replace=True)
  arms, _ = s_rep.sample(s_rep.init(), jax.random.key(0), 6)
  np.testing.assert_array_equal(np.bincount(np.asarray(arms), minlength=3), [2, 2, 2])


CLEAR_MEANS = np.array([0.1, 0.2, 0.3, 0.4, 0.8], np.float32)


@pytest.mark.parametrize("name, kwargs", [
    ("ucb", dict(objective="reward")),
    ("exp3", dict(objective="reward", gamma=0.1, eta=0.05)),
])
def test_reward_bandit_regret_on_clear_instance(name, kwargs):
  steps = 800
  s = cur.make_sampler(name, 5, **kwargs)
  _, arms, _ = simulate(s, CLEAR_MEANS, steps, 1, 1)
  arms = arms[:, 0]
  regret = float(np.sum(CLEAR_MEANS.max() - CLEAR_MEANS[arms]))
  uniform_regret = steps * float(np.mean(CLEAR_MEANS.max() - CLEAR_MEANS))  # 0.44 per pull.
  assert regret < 0.35 * uniform_regret, (regret, uniform_regret)
  best_early, best_late = np.mean(arms[:steps // 2] == 4), np.mean(arms[steps // 2:] == 4)
  assert best_late > 0.8 and best_late >= best_early, (best_early, best_late)


# ------------------------------------------------------------------------------------------------
# Thompson sampling.
# ------------------------------------------------------------------------------------------------


def test_thompson_posterior_is_prior_plus_counts():
  s = cur.make_sampler("thompson", 3, objective="reward", prior_alpha=2.0, prior_beta=0.5)
  rng = np.random.default_rng(0)
  state, succ, fail = s.init(), np.zeros(3), np.zeros(3)
  for _ in range(5):
    arms = rng.integers(0, 3, size=4)
    rewards = rng.integers(0, 2, size=(4, 6)).astype(np.float32)
    state = s.update(state, jnp.asarray(arms), jnp.asarray(rewards))
    np.add.at(succ, arms, rewards.sum(1))
    np.add.at(fail, arms, (1 - rewards).sum(1))
  np.testing.assert_allclose(state.alpha, 2.0 + succ)
  np.testing.assert_allclose(state.beta, 0.5 + fail)
  assert int(np.asarray(state.pulls).sum()) == 20 and int(state.step) == 5

  # Discount 0.5 decays the evidence towards the prior Beta(1, 1) before adding new counts.
  s_d = cur.make_sampler("thompson", 3, objective="reward", discount=0.5)
  st = s_d.update(s_d.init(), jnp.array([0, 2]), jnp.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
  np.testing.assert_allclose(st.alpha, [3.0, 1.0, 1.0])
  np.testing.assert_allclose(st.beta, [2.0, 1.0, 4.0])
  st = s_d.update(st, jnp.array([0]), jnp.array([[1.0, 0.5]]))
  np.testing.assert_allclose(st.alpha, [1 + 0.5 * 2 + 1.5, 1.0, 1.0])
  np.testing.assert_allclose(st.beta, [1 + 0.5 * 1 + 0.5, 1.0, 1 + 0.5 * 3])


# ------------------------------------------------------------------------------------------------
# Exp3.
# ------------------------------------------------------------------------------------------------


def test_exp3_update_hand_values():
  s = cur.make_sampler("exp3", 3, objective="reward", gamma=0.3, eta=0.1)
  state = s.update(s.init(), jnp.array([0, 0, 2]), jnp.array([1.0, 0.5, 1.0]))
  # p = 1/3 each; r_hat = [(1 + 0.5) * 3, 0, 1 * 3] = [4.5, 0, 3]; log w = 0.1 * r_hat - max.
  np.testing.assert_allclose(state.log_weights, [0.0, -0.45, -0.15], atol=1e-6)
  w = np.exp([0.45, 0.0, 0.3])
  np.testing.assert_allclose(s.probabilities(state), 0.7 * w / w.sum() + 0.1, rtol=1e-6)
  assert s.learning_rate == pytest.approx(0.1)
  assert cur.make_sampler("exp3", 4, gamma=0.2).learning_rate == pytest.approx(0.05)


def test_exp3_probabilities_floor_and_unbiased_estimate():
  s = cur.make_sampler("exp3", 3, objective="reward", gamma=0.3, eta=1e-3)
  extreme = cur.Exp3State(jnp.array([0.0, -1000.0, -50.0]), jnp.zeros(3, jnp.int32),
                          jnp.zeros((), jnp.int32))
  p = np.asarray(s.probabilities(extreme))
  assert p.sum() == pytest.approx(1.0, abs=1e-6) and p.min() >= 0.1 - 1e-7

  # Monte Carlo: with p non-uniform, the importance-weighted estimate recovers the arm means.
  state = extreme._replace(log_weights=jnp.array([0.0, -1.0, -2.0]))
  p = np.asarray(s.probabilities(state))
  mu = np.array([0.2, 0.5, 0.9])
  num = 20000
  arms, _ = s.sample(state, jax.random.key(0), num)
  a = np.asarray(arms)
  np.testing.assert_allclose(np.bincount(a, minlength=3) / num, p, atol=0.015)
  rewards = (np.random.default_rng(0).random(num) < mu[a]).astype(np.float32)
  new = s.update(state, arms, rewards)
  delta = np.asarray(new.log_weights) - np.asarray(state.log_weights)
  estimate = (delta - delta[0]) / (s.learning_rate * num)  # r_hat(a) - r_hat(0), per draw.
  np.testing.assert_allclose(estimate, mu - mu[0], atol=0.08)


# ------------------------------------------------------------------------------------------------
# Concentration on informative prompts (objective='variance'), against uniform.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, kwargs", [
    ("ucb", {}),
    ("thompson", {}),
    ("exp3", dict(gamma=0.1, eta=0.1)),
])
def test_bandits_concentrate_on_informative_prompts(name, kwargs):
  steps = 160
  s = cur.make_sampler(name, K, **kwargs)
  check_sampling_is_a_function_of_state_and_key(s)
  state, arms, rewards = simulate(s, POOL, steps, B, G)
  uniform_zv = uniform_zero_variance_fraction(POOL, G)  # ~0.80
  late = slice(steps // 2, None)
  zv_late = zero_variance(rewards[late]).mean()
  assert zv_late < 0.5 * uniform_zv, (zv_late, uniform_zv)
  frac_informative = INFORMATIVE[arms[late]].mean()
  assert frac_informative > 2 * INFORMATIVE.mean(), frac_informative  # uniform: 0.2
  # Regret on the variance signal against always pulling p = 1/2 (E[4 var] = 4 p (1 - p) 7/8).
  expected_signal = 4 * POOL * (1 - POOL) * (G - 1) / G
  regret = np.sum(expected_signal.max() - expected_signal[arms])
  uniform_regret = arms.size * np.mean(expected_signal.max() - expected_signal)
  assert regret < 0.6 * uniform_regret, (regret, uniform_regret)
  assert int(np.asarray(state.pulls).sum()) == steps * B


def test_variance_aware_sampling_on_pool():
  steps = 120
  s = cur.make_sampler("variance_aware", K)  # mix 0.5, alpha 0.8, beta 0.2.
  check_sampling_is_a_function_of_state_and_key(s)
  state, arms, rewards = simulate(s, POOL, steps, B, G)
  num_weighted, _ = s.split(B)
  assert num_weighted == 2
  late = slice(steps // 2, None)
  weighted, uniform = arms[late, :num_weighted], arms[late, num_weighted:]
  ovs = POOL * (1 - POOL)
  # VAS picks high-variance prompts; the uniform half does not.
  assert ovs[weighted].mean() > 3 * ovs[uniform].mean(), (ovs[weighted].mean(),
                                                          ovs[uniform].mean())
  zv = zero_variance(rewards[late])
  uniform_zv = uniform_zero_variance_fraction(POOL, G)
  assert zv[:, :num_weighted].mean() < 0.15
  assert zv.mean() < 0.7 * uniform_zv, (zv.mean(), uniform_zv)
  # Scores are refreshed from the last group of each prompt: solved/unsolved prompts have OVS 0.
  seen = np.asarray(state.num_scored) > 0
  np.testing.assert_allclose(np.asarray(state.outcome_variance)[seen & (POOL == 1.0)], 0.0)


# ------------------------------------------------------------------------------------------------
# MMR1 variance-aware sampling: exact rules.
# ------------------------------------------------------------------------------------------------


def test_vas_update_and_scores_hand_values():
  s = cur.make_sampler("vas", 4)
  state = s.update(
      s.init(), jnp.array([1, 3, 3]),
      jnp.array([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]),
      diversity=jnp.array([0.4, 0.6, 0.2]))
  # Prompt 1: P = .25, OVS = .25 * .75 = .1875. Prompt 3: mean of (.5, .25) and (1, 0).
  np.testing.assert_allclose(state.pass_rate, [0.5, 0.25, 0.5, 0.75])
  np.testing.assert_allclose(state.outcome_variance, [0.25, 0.1875, 0.25, 0.125])
  np.testing.assert_allclose(state.diversity, [0.0, 0.4, 0.0, 0.4], rtol=1e-6)
  np.testing.assert_array_equal(state.num_scored, [0, 1, 0, 1])
  np.testing.assert_array_equal(state.pulls, [0, 1, 0, 2])
  vps = np.array([0.8 * 0.25, 0.8 * 0.1875 + 0.2 * 0.4, 0.8 * 0.25, 0.8 * 0.125 + 0.2 * 0.4])
  np.testing.assert_allclose(s.scores(state), vps, rtol=1e-6)
  np.testing.assert_allclose(s.weights(state), vps / vps.sum(), rtol=1e-6)
  s_mm = cur.make_sampler("vas", 4, normalize="minmax")
  mm = (vps - vps.min()) / (vps.max() - vps.min())
  np.testing.assert_allclose(s_mm.weights(state), mm / mm.sum(), rtol=1e-5, atol=1e-7)

  # EMA with momentum 0.5 on prompt 1, diversity kept when not given.
  s_m = cur.make_sampler("vas", 4, momentum=0.5)
  st = s_m.update(s_m.init(), jnp.array([1]), jnp.array([[1.0, 0.0, 0.0, 0.0]]))
  st = s_m.update(st, jnp.array([1]), jnp.array([[1.0, 1.0, 1.0, 1.0]]))
  # First: .5 * .25 + .5 * .1875 = .21875; second: .5 * .21875 + .5 * 0.
  np.testing.assert_allclose(st.outcome_variance[1], 0.109375)
  np.testing.assert_allclose(st.pass_rate[1], 0.5 * (0.5 * 0.5 + 0.5 * 0.25) + 0.5 * 1.0)

  # All scores zero: the weighted part falls back to uniform.
  st0 = s.init(outcome_variance=jnp.zeros(4))
  np.testing.assert_allclose(s.weights(st0), 0.25)
  with pytest.raises(ValueError, match=r"pass_rate must have shape \[num_arms\]"):
    s.init(pass_rate=jnp.zeros(3))
  with pytest.raises(ValueError, match="diversity must have shape"):
    s.update(state, jnp.array([0]), jnp.ones((1, 4)), diversity=jnp.ones(2))
  with pytest.raises(ValueError, match="outcome variance needs several rollouts"):
    s.update(state, jnp.array([0]), jnp.ones((1,)))


def test_vas_batch_split_and_uniform_walk():
  k = 12
  only7 = np.zeros(k, np.float32)
  only7[7] = 0.25
  s = cur.make_sampler("vas", k, mix=0.5)
  assert s.split(6) == (3, 3) and s.split(5) == (2, 3) and s.split(1) == (0, 1)
  assert cur.make_sampler("vas", k, mix=0.0).split(6) == (0, 6)
  state = s.init(pass_rate=jnp.zeros(k), outcome_variance=jnp.asarray(only7))
  uniform_parts = []
  for i in range(8):
    arms, state = s.sample(state, jax.random.key(i), 6)
    np.testing.assert_array_equal(arms[:3], [7, 7, 7])  # Exactly floor(0.5 * 6) VPS draws.
    uniform_parts.append(np.asarray(arms[3:]))
  # The uniform part walks random permutations without replacement, reshuffled per epoch.
  first, second = np.concatenate(uniform_parts[:4]), np.concatenate(uniform_parts[4:])
  np.testing.assert_array_equal(np.sort(first), np.arange(k))
  np.testing.assert_array_equal(np.sort(second), np.arange(k))
  assert not np.array_equal(first, second)
  with pytest.raises(ValueError, match="uniform draws without replacement"):
    cur.make_sampler("vas", k, mix=0.0).sample(state, jax.random.key(0), 13)

  # Weighted draws are proportional to VPS (paper normalisation); a prompt with VPS 0 is never
  # drawn by the weighted part.
  graded = np.arange(k, dtype=np.float32) / 44.0  # OVS in [0, 0.25]; VPS = 0.8 * OVS.
  state = s.init(pass_rate=jnp.zeros(k), outcome_variance=jnp.asarray(graded))
  weighted = []
  for i in range(400):
    arms, state = s.sample(state, jax.random.key(100 + i), 6)
    weighted.append(np.asarray(arms[:3]))
  freq = np.bincount(np.concatenate(weighted), minlength=k) / 1200
  assert freq[0] == 0.0
  np.testing.assert_allclose(freq, graded / graded.sum(), atol=0.04)
  assert cur.make_sampler("vas", k, mix=1.0).split(6) == (6, 0)
  # Constant scores: min-max weights are uniform.
  s_mm = cur.make_sampler("vas", 5, normalize="minmax")
  np.testing.assert_allclose(s_mm.weights(s_mm.init()), 0.2)


def test_distinct_n():
  same = np.array([[1, 2, 3, 4], [1, 2, 3, 4]])
  diff = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
  # Bigrams: same -> 3 unique of 6; diff -> 6 of 6.
  assert cur.distinct_n(same, n=2) == pytest.approx(0.5)
  assert cur.distinct_n(diff, n=2) == pytest.approx(1.0)
  # Padding is not counted: rows [1, 2, 0, 0] and [3, 4, 0, 0] with pads masked are 2 of 2.
  padded = np.array([[1, 2, 0, 0], [3, 4, 0, 0]])
  mask = padded > 0
  assert cur.distinct_n(padded, mask, n=2) == pytest.approx(1.0)
  assert cur.distinct_n(padded, n=2) == pytest.approx(5 / 6)  # 12 20 00 34 40 00: 5 unique
  np.testing.assert_allclose(cur.distinct_n(np.stack([same, diff]), n=2), [0.5, 1.0])
  assert cur.distinct_n(np.array([[1], [2]]), n=3) == 0.0
  with pytest.raises(ValueError, match="mask must have the shape"):
    cur.distinct_n(same, mask[:, :2], n=2)


# ------------------------------------------------------------------------------------------------
# DAPO dynamic filtering.
# ------------------------------------------------------------------------------------------------


def test_dynamic_filter_hand_values_and_stats():
  rewards = jnp.array([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.2, 0.2, 0.9],
                       [0.5, 0.5, 0.5], [1.0, 0.0, 0.0]])
  keep, stats = cur.dynamic_filter(rewards)
  np.testing.assert_array_equal(keep, [True, False, False, True, False, True])
  stats = {k: float(v) for k, v in stats.items()}
  assert stats["num_groups"] == 6 and stats["num_kept"] == 3 and stats["num_dropped"] == 3
  assert stats["fraction_dropped"] == pytest.approx(0.5)
  assert stats["num_dropped_all_positive"] == 1  # [1, 1, 1]
  assert stats["num_dropped_all_negative"] == 2  # [0, 0, 0] and [.5, .5, .5] (not > 0.5)
  assert stats["num_dropped_too_small"] == 0 and stats["num_over_budget"] == 0

  # Budget and ragged groups: a group with one valid sample is dropped as too small.
  valid = jnp.ones(rewards.shape, bool).at[0, 1:].set(False)
  keep, stats = cur.dynamic_filter(rewards, valid=valid, max_groups=1, atol=0.5)
  # Spreads: row 3 -> .7 > .5 kept; row 5 -> 1.0 informative but over budget.
  np.testing.assert_array_equal(keep, [False, False, False, True, False, False])
  s = {k: int(v) for k, v in stats.items() if k != "fraction_dropped"}
  assert s["num_dropped_too_small"] == 1 and s["num_over_budget"] == 1
  assert s["num_dropped"] == (s["num_dropped_all_positive"] + s["num_dropped_all_negative"]
                              + s["num_dropped_too_small"] + s["num_over_budget"]) == 5
  with pytest.raises(ValueError, match="group_rewards must have shape"):
    cur.dynamic_filter(jnp.ones(3))
  with pytest.raises(ValueError, match="valid must have the shape"):
    cur.dynamic_filter(rewards, valid=valid[:, :2])
  with pytest.raises(ValueError, match="atol"):
    cur.dynamic_filter(rewards, atol=-1.0)
  with pytest.raises(ValueError, match="finite"):
    cur.dynamic_filter(rewards.at[0, 0].set(jnp.nan))


def test_dynamic_filter_on_uniform_batches():
  rng = np.random.default_rng(1)
  arms = rng.integers(0, K, size=2000)
  rewards = (rng.random((2000, G)) < POOL[arms][:, None]).astype(np.float32)
  keep, stats = jax.jit(cur.dynamic_filter)(rewards)
  keep = np.asarray(keep)
  zv = zero_variance(rewards)
  np.testing.assert_array_equal(keep, ~zv)
  assert int(stats["num_dropped"]) == int(zv.sum())
  assert zero_variance(rewards[keep]).mean() == 0.0  # From ~0.8 under uniform to 0.
  assert abs(zv.mean() - uniform_zero_variance_fraction(POOL, G)) < 0.03


# ------------------------------------------------------------------------------------------------
# Reinforce-Ada.
# ------------------------------------------------------------------------------------------------


def test_reinforce_ada_advantages_hand_values():
  pool = jnp.array([[1.0] + [0.0] * 9])  # p_hat = 0.1
  kept = jnp.array([[1.0, 1.0, 0.0, 0.0]])
  adv = cur.reinforce_ada_advantages(kept, pool, jnp.ones(pool.shape, bool))
  np.testing.assert_allclose(adv, [[0.9, 0.9, -0.1, -0.1]], rtol=1e-6)  # GRPO would give +-0.5.
  # 'std': divide by the unbiased std of the pool, sqrt((0.81 + 9 * 0.01) / 9) = sqrt(0.1).
  adv = cur.reinforce_ada_advantages(kept, pool, jnp.ones(pool.shape, bool), scale="std")
  np.testing.assert_allclose(adv, np.array([[0.9, 0.9, -0.1, -0.1]]) / np.sqrt(0.1), rtol=1e-5)
  # Masked pool slots do not count; padding of the kept group gets 0; a single draw gives 0.
  mask = jnp.array([[True, True, False, False]])
  adv = cur.reinforce_ada_advantages(jnp.array([[1.0, 0.0]]), jnp.array([[1.0, 0.0, 1.0, 1.0]]),
                                     mask, kept_mask=jnp.array([[True, False]]))
  np.testing.assert_allclose(adv, [[0.5, 0.0]])
  adv = cur.reinforce_ada_advantages(jnp.array([[1.0]]), jnp.array([[1.0, 0.0]]),
                                     jnp.array([[True, False]]))
  np.testing.assert_allclose(adv, [[0.0]])
  with pytest.raises(ValueError, match="pool_mask must have the shape"):
    cur.reinforce_ada_advantages(kept, pool, jnp.ones((1, 3), bool))


def test_reinforce_ada_rounds_hand_example():
  ada = cur.ReinforceAda(num_arms=10, group_size=4, samples_per_round=4, max_rounds=3,
                         rule="balanced")
  state = ada.begin(4)
  # Round 0: prompt 0 gets 2 pos + 2 neg -> exits; prompt 1 all correct; prompt 2 3 pos, 1 neg;
  # prompt 3 all wrong.
  state = ada.observe(state, jnp.array([[1.0, 0.0, 1.0, 0.0], [1.0] * 4, [1.0, 1.0, 1.0, 0.0],
                                        [0.0] * 4]))
  np.testing.assert_array_equal(state.active, [False, True, True, True])
  # Round 1: prompt 0 is inactive, its row (5.0) must be ignored; prompt 2 gets 4 negatives.
  state = ada.observe(state, jnp.array([[5.0] * 4, [1.0] * 4, [0.0] * 4, [1.0, 0.0, 0.0, 0.0]]))
  np.testing.assert_array_equal(state.active, [False, True, False, True])
  state = ada.observe(state, jnp.array([[5.0] * 4, [1.0] * 4, [5.0] * 4, [0.0] * 4]))
  np.testing.assert_array_equal(state.active, [False, False, False, False])
  np.testing.assert_array_equal(state.exit_round, [0, -1, 1, -1])
  np.testing.assert_array_equal(state.active_per_round, [4, 3, 2])
  np.testing.assert_array_equal(np.asarray(state.drawn).sum(1), [4, 12, 8, 12])
  assert float(np.asarray(state.rewards)[0].max()) == 1.0  # The 5.0 rows were not recorded.
  with pytest.raises(ValueError, match="more than max_rounds=3"):
    ada.observe(state, jnp.zeros((4, 4)))

  groups, stats = ada.finish(state)
  # Prompt 0: positives at slots 0, 2; negatives at 1, 3. Prompt 1: the first 4 positives.
  # Prompt 2: positives 0, 1; negatives 3 (round 0) and 4 (round 1). Pool mean 3/8.
  # Prompt 3 (fallback, 1 positive in 12): k_pos = 1 (slot 4), k_neg = 3 (slots 0, 1, 2).
  np.testing.assert_array_equal(groups.sample_index,
                                [[0, 2, 1, 3], [0, 1, 2, 3], [0, 1, 3, 4], [4, 0, 1, 2]])
  np.testing.assert_array_equal(groups.rewards,
                                [[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
  np.testing.assert_allclose(groups.advantages,
                             [[0.5, 0.5, -0.5, -0.5], [0, 0, 0, 0],
                              [0.625, 0.625, -0.375, -0.375],
                              [11 / 12, -1 / 12, -1 / 12, -1 / 12]], rtol=1e-6)
  np.testing.assert_array_equal(groups.exited, [True, False, True, False])
  np.testing.assert_allclose(groups.pool_mean, [0.5, 1.0, 0.375, 1 / 12], rtol=1e-6)
  stats = {k: int(v) for k, v in stats.items()}
  assert stats == dict(num_prompts=4, num_exited=2, num_fallback=2, num_samples_drawn=36,
                       sample_budget=48, num_samples_kept=16, num_zero_variance_groups=1,
                       rounds_used=3)


def test_reinforce_ada_pos_rule_and_fill():
  ada = cur.ReinforceAda(num_arms=10, group_size=4, samples_per_round=4, max_rounds=2, rule="pos")
  state = ada.begin(3)
  # Prompt 0: one positive -> exits after one round. Prompt 1: all positive -> exits, group
  # filled with spare positives. Prompt 2: never positive -> fallback of negatives.
  state = ada.observe(state, jnp.array([[0.0, 0.9, 0.0, 0.0], [1.0] * 4, [0.0, 0.7, 0.0, 0.0]]))
  np.testing.assert_array_equal(state.active, [False, False, True])  # 0.7 is not > 0.7.
  state = ada.observe(state, jnp.zeros((3, 4)))
  groups, stats = ada.finish(state)
  np.testing.assert_array_equal(groups.sample_index[0], [1, 0, 2, 3])
  np.testing.assert_array_equal(groups.rewards[1], [1, 1, 1, 1])
  np.testing.assert_array_equal(groups.sample_index[2], [0, 1, 2, 3])
  np.testing.assert_allclose(groups.advantages[1], 0.0)
  np.testing.assert_allclose(groups.advantages[2], np.array([0.0, 0.7, 0.0, 0.0]) - 0.7 / 8)
  assert int(stats["num_samples_drawn"]) == 4 + 4 + 8



@pytest.mark.parametrize("rule", ["balanced", "pos"])
def test_reinforce_ada_simulation(rule):
  num_prompts, n, m, rounds = 200, 4, 8, 4
  rng = np.random.default_rng(0)
  p = rng.beta(0.5, 0.5, size=num_prompts).astype(np.float32)
  ada = cur.make_sampler("reinforce_ada", 1000, rule=rule)  # Paper defaults n=4, M=8, R=4.
  assert (ada.group_size, ada.samples_per_round, ada.max_rounds) == (n, m, rounds)

  draw_rng = np.random.default_rng(1)

  def draw_rewards(key, active):
    del key
    r = (draw_rng.random((num_prompts, m)) < p[:, None]).astype(np.float32)
    return np.where(active[:, None], r, -1.0)  # Garbage in inactive rows is ignored.

  groups, stats, state = ada._collect_rounds(jax.random.key(0), num_prompts, draw_rewards)
  rewards, drawn = np.asarray(state.rewards), np.asarray(state.drawn)
  exit_round = np.asarray(state.exit_round)
  pos = drawn & (rewards > 0.7)
  neg = drawn & ~pos

  def rule_holds(num_pos, num_neg):
    return num_pos >= 1 if rule == "pos" else (num_pos >= n // 2) & (num_neg >= n - n // 2)

  # Exit rules: met at the exit round and not before; never met by fallback prompts.
  for i in range(num_prompts):
    e = exit_round[i]
    rounds_drawn = rounds if e < 0 else e + 1
    assert drawn[i].sum() == m * rounds_drawn and drawn[i, :m * rounds_drawn].all()
    cum_pos = np.cumsum(pos[i].reshape(rounds, m).sum(1))
    cum_neg = np.cumsum(neg[i].reshape(rounds, m).sum(1))
    met = rule_holds(cum_pos, cum_neg)[:rounds_drawn]
    assert not met[:-1].any()
    assert met[-1] == (e >= 0)
  # Budget: at most R * M per prompt, and exactly M per active prompt per round.
  assert int(stats["num_samples_drawn"]) == drawn.sum() <= num_prompts * rounds * m
  assert int(stats["sample_budget"]) == num_prompts * rounds * m
  assert drawn.sum() == m * np.asarray(state.active_per_round).sum()
  assert np.all(np.diff(np.asarray(state.active_per_round)) <= 0)
  # Groups: size n, distinct drawn slots, rewards and advantages recomputed from the pool.
  idx = np.asarray(groups.sample_index)
  assert idx.shape == (num_prompts, n) and np.asarray(groups.valid).all()
  kept = np.take_along_axis(rewards, idx, axis=1)
  np.testing.assert_array_equal(kept, groups.rewards)
  assert np.take_along_axis(drawn, idx, axis=1).all()
  assert all(len(set(row)) == n for row in idx.tolist())
  pool_mean = rewards.sum(1) / drawn.sum(1)
  np.testing.assert_allclose(groups.advantages, kept - pool_mean[:, None], atol=1e-6)
  exited = exit_round >= 0
  num_kept_pos = (kept > 0.7).sum(1)
  if rule == "balanced":
    assert np.all(num_kept_pos[exited] == n // 2)
  else:
    assert np.all(num_kept_pos[exited] >= 1)
    first_round_pos = pos[:, :m].any(1)
    np.testing.assert_array_equal(exit_round == 0, first_round_pos)
  # Reward diversity: far fewer zero-variance groups than GRPO with n samples per prompt.
  ada_zero = zero_variance(kept).mean()
  grpo_zero = float(np.mean(p.astype(np.float64)**n + (1 - p.astype(np.float64))**n))
  assert int(stats["num_zero_variance_groups"]) == int(zero_variance(kept).sum())
  # Balanced: only fallbacks with no positive or no negative in R * M draws (~E[p^32]);
  # pos: also prompts whose first round is all positive (~E[p^8]). GRPO: E[p^4 + (1-p)^4].
  assert ada_zero < (0.5 if rule == "balanced" else 0.75) * grpo_zero, (ada_zero, grpo_zero)


def test_reinforce_ada_prompt_level_contract():
  ada = cur.make_sampler("reinforce_ada", 6)
  state = ada.init()
  arms, state = ada.sample(state, jax.random.key(0), 6)
  np.testing.assert_array_equal(np.sort(np.asarray(arms)), np.arange(6))
  state = ada.update(state, arms[:2], jnp.ones((2, 4)))
  assert int(np.asarray(state.pulls).sum()) == 2
  with pytest.raises(ValueError, match="num_prompts"):
    ada.begin(0)
  with pytest.raises(ValueError, match=r"rewards must have shape \[num_prompts, samples_per_round\]"):
    ada.observe(ada.begin(2), jnp.zeros((2, 3)))
