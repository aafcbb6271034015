"""Advantages and baselines against NumPy float64 / plain Python loops, eager, jitted and vmapped.

Group advantages (GRPO std, Dr. GRPO none, REINFORCE++-baseline batch-std, Lite PPO
batch-raw-std) including singleton and zero-variance groups, RLOO, the global per-prompt baseline
with ragged group ids, discounted returns and GAE (with masks that have gaps). The peer claims in
the docstrings are checked against NumPy transcriptions of the peers' code (TRL, Trinity-RFT,
verl, OpenRLHF, tunix), written from their source and not from rljax's.
"""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

import rljax

RTOL, ATOL = 1e-5, 1e-6
JIT = pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])


def close(got, want, rtol=RTOL, atol=ATOL):
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=atol)


@functools.lru_cache(maxsize=None)
def _jitted(fn, **kwargs):
  return jax.jit(functools.partial(fn, **kwargs))


def call(fn, *args, jit, **kwargs):
  return _jitted(fn, **kwargs)(*args) if jit else fn(*args, **kwargs)


# --------------------------------------------------------------------------- NumPy references


def np_group_advantages(r, g, scale, eps=1e-6):
  r = np.asarray(r, np.float64).reshape(-1, g)
  centred = r - r.mean(axis=1, keepdims=True)
  flat = np.ptp(r, axis=1, keepdims=True) == 0
  centred = np.where(flat, 0.0, centred)
  if scale == "none":
    adv = centred
  elif scale == "std":
    if g == 1:
      adv = np.zeros_like(r)
    else:
      std = np.std(r, axis=1, ddof=1, keepdims=True)
      adv = np.where(flat, 0.0, centred / (std + eps))
  elif centred.size < 2:
    adv = np.zeros_like(r)
  elif scale == "batch-std":
    adv = centred / (np.std(centred, ddof=1) + eps)
  else:
    adv = centred / (np.std(r, ddof=1) + eps)
  return adv.reshape(-1)


def np_rloo(r, g):
  out = []
  for grp in np.asarray(r, np.float64).reshape(-1, g):
    for i in range(g):
      others = np.delete(grp, i)
      out.append(grp[i] - others.mean() if g > 1 else 0.0)
  return np.array(out)


def np_global_baseline(r, ids, mask):
  r = np.asarray(r, np.float64)
  out = np.zeros_like(r)
  for i in range(len(r)):
    if not mask[i]:
      continue
    same = [j for j in range(len(r)) if ids[j] == ids[i] and mask[j]]
    out[i] = r[i] - np.mean(r[same])
  return out


def py_discounted_returns(rewards, mask, gamma):
  out = np.zeros(rewards.shape)
  for b in range(rewards.shape[0]):
    g = 0.0
    for t in reversed(range(rewards.shape[1])):
      if mask[b, t]:
        g = rewards[b, t] + gamma * g
        out[b, t] = g
  return out


def py_gae(rewards, values, mask, gamma, lam):
  adv = np.zeros(rewards.shape)
  for b in range(rewards.shape[0]):
    valid = [t for t in range(rewards.shape[1]) if mask[b, t]]
    next_v, next_a = 0.0, 0.0
    for t in reversed(valid):
      delta = rewards[b, t] + gamma * next_v - values[b, t]
      next_a = delta + gamma * lam * next_a
      next_v = values[b, t]
      adv[b, t] = next_a
  return adv, np.where(mask > 0, adv + values, 0.0)


# --------------------------------------------------------------------------- group advantages

# Four groups of 3: a spread group, a zero-variance group, a binary group, a large-offset group.
REWARDS = np.array([1.0, 0.0, 0.5, 2.0, 2.0, 2.0, 0.0, 1.0, 1.0, 1e3, 1e3 + 1.0, 1e3 - 2.0],
                   np.float32)


@JIT
@pytest.mark.parametrize("scale", rljax.GROUP_SCALES)
@pytest.mark.parametrize("group_size", [1, 3, 12])
def test_group_advantages_match_numpy(scale, group_size, jit):
  got = call(rljax.group_advantages, REWARDS, group_size=group_size, scale=scale, jit=jit)
  assert got.dtype == jnp.float32 and got.shape == REWARDS.shape
  close(got, np_group_advantages(REWARDS, group_size, scale), rtol=1e-4, atol=1e-5)


def test_group_advantages_properties():
  std = np.asarray(rljax.group_advantages(REWARDS, 3), np.float64).reshape(-1, 3)
  # Zero-variance group: exactly 0 (not rounding noise, not NaN).
  assert np.all(std[1] == 0)
  for k in (0, 2, 3):
    close(std[k].sum(), 0.0, atol=1e-4)  # group 3 sits at 1e3: float32 mean is good to ~6e-5
    close(np.std(std[k], ddof=1), 1.0, rtol=1e-4)  # unit (n-1) std, eps 1e-6 is negligible
  # Singleton groups: 0 for every scale.
  for scale in rljax.GROUP_SCALES:
    assert np.all(np.asarray(rljax.group_advantages(REWARDS, 1, scale=scale)) == 0)
  # Binary group [0, 1, 1]: hand value -(2/3)/std, std = sqrt(1/3).
  close(std[2], np.array([-2 / 3, 1 / 3, 1 / 3]) / np.sqrt(1 / 3), rtol=1e-5)
  # batch-std: the centred rewards of the whole batch have unit (n-1) std.
  bs = np.asarray(rljax.group_advantages(REWARDS, 3, scale="batch-std"), np.float64)
  close(np.std(bs, ddof=1), 1.0, rtol=1e-4)
  close(bs.reshape(-1, 3).sum(axis=1), np.zeros(4), atol=2e-4)
  # Rewards are data.
  g = jax.grad(lambda r: rljax.group_advantages(r, 3).sum())(jnp.asarray(REWARDS))
  assert np.all(np.asarray(g) == 0)


def test_group_advantages_vmap_and_errors():
  rs = np.stack([REWARDS, REWARDS[::-1]])
  for scale in rljax.GROUP_SCALES:
    got = jax.vmap(functools.partial(rljax.group_advantages, group_size=3, scale=scale))(rs)
    close(got, [np_group_advantages(rs[i], 3, scale) for i in range(2)], rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="not a multiple of group_size=5"):
    rljax.group_advantages(REWARDS, 5)
  with pytest.raises(ValueError, match="group_size must be a positive Python int"):
    rljax.group_advantages(REWARDS, 0)
  with pytest.raises(ValueError, match="group_size must be a positive Python int"):
    rljax.group_advantages(REWARDS, 3.0)
  with pytest.raises(ValueError, match=r"scale='mad'.*std.*none.*batch-std"):
    rljax.group_advantages(REWARDS, 3, scale="mad")
  with pytest.raises(ValueError, match=r"rewards must have shape \[B\]"):
    rljax.group_advantages(REWARDS.reshape(4, 3), 3)


# --------------------------------------------------------------------------- peer transcriptions
# Each function restates one peer's code path in NumPy float64, written from the peer's source
# (file and function named), so a test fails when rljax's docstring misdescribes the peer.


def _trl_nanstd(x):
  """trl/trainer/utils.py nanstd: nanmean of squared deviations times count / (count - 1)."""
  x = np.asarray(x, np.float64)
  count = np.sum(~np.isnan(x))
  var = np.nanmean((x - np.nanmean(x)) ** 2)
  return np.sqrt(var * count / (count - 1)) if count > 1 else np.nan


def trl_advantages(r, num_generations, scale_rewards):
  """TRL GRPOTrainer._generate_and_score_completions, multi_objective_aggregation=
  'sum_then_normalize' with one reward function (rewards already gathered over processes)."""
  r = np.asarray(r, np.float64)
  grouped = r.reshape(-1, num_generations)
  mean_grouped = np.repeat(grouped.mean(axis=1), num_generations)
  if scale_rewards in ("group", "none"):
    if num_generations > 1:
      std = np.repeat([_trl_nanstd(grp) for grp in grouped], num_generations)
    else:
      std = np.zeros_like(r)
  else:  # "batch": the std of the raw rewards of the whole batch
    std = np.full_like(r, _trl_nanstd(r)) if r.size > 1 else np.zeros_like(r)
  adv = r - mean_grouped
  if scale_rewards != "none":
    adv = adv / (std + 1e-4)
  return np.nan_to_num(adv, nan=0.0)


def trinity_grpo_batch_advantages(r, group_size, epsilon=1e-6):
  """Trinity-RFT trinity/algorithm/advantage_fn/grpo_advantage.py GRPOGroupedAdvantage.process
  with std_cal_level='batch' (torch.std is unbiased; a batch of one gets std 1; a singleton
  group gets mean 0)."""
  r = np.asarray(r, np.float64)
  precomputed_std = np.std(r, ddof=1) if r.size > 1 else 1.0
  out = []
  for grp in r.reshape(-1, group_size):
    mean = 0.0 if grp.size == 1 else grp.mean()
    out.extend((grp - mean) / (precomputed_std + epsilon))
  return np.array(out)


def verl_grpo_advantages(r, group_size, epsilon=1e-6):
  """verl core_algos.py compute_grpo_outcome_advantage (norm_adv_by_std_in_grpo=True), with
  contiguous uids: torch.std (unbiased); a singleton gets mean 0 and std 1."""
  scores = np.asarray(r, np.float64)
  index = np.repeat(np.arange(scores.size // group_size), group_size)
  out = np.empty_like(scores)
  for idx in np.unique(index):
    grp = scores[index == idx]
    mean, std = (0.0, 1.0) if grp.size == 1 else (grp.mean(), np.std(grp, ddof=1))
    out[index == idx] = (grp - mean) / (std + epsilon)
  return out


def tunix_grpo_advantages(r, num_generations):
  """tunix tunix/rl/algo_core.py compute_advantages ('grpo'): ddof=1 std, + 1e-6."""
  g = np.asarray(r, np.float64).reshape(-1, num_generations)
  mean = np.repeat(g.mean(axis=-1), num_generations)
  std = np.repeat(g.std(axis=-1, ddof=1), num_generations)
  return (np.asarray(r, np.float64) - mean) / (std + 1e-6)


def verl_rloo_vectorized(r, group_size):
  """verl core_algos.py compute_rloo_vectorized_outcome_advantage: singletons get 0."""
  scores = np.asarray(r, np.float64)
  inv = np.repeat(np.arange(scores.size // group_size), group_size)
  c = np.bincount(inv)[inv].astype(np.float64)
  sums = np.bincount(inv, weights=scores)[inv]
  return (c * scores - sums) / np.maximum(c - 1, 1) * (c > 1)


def verl_reinforce_pp_baseline(r, group_size, mask):
  """verl core_algos.py compute_reinforce_plus_plus_baseline_outcome_advantage: centre by the
  group mean, broadcast over tokens, then verl_F.masked_whiten (Bessel over tokens, var + 1e-8)."""
  scores = np.asarray(r, np.float64).reshape(-1, group_size)
  scores = (scores - scores.mean(axis=1, keepdims=True)).reshape(-1)
  tok = scores[:, None] * mask
  mean = (tok * mask).sum() / mask.sum()
  var = ((tok - mean) ** 2 * mask).sum() / mask.sum() * mask.sum() / (mask.sum() - 1)
  return (tok - mean) / np.sqrt(var + 1e-8) * mask


def openrlhf_reinforce_baseline(r, group_size, mask):
  """OpenRLHF experience_maker.py, estimator 'reinforce_baseline' with no KL in the reward: centre
  by the group mean, returns-to-go (gamma 1) put the reward on every valid token, then whiten
  over all valid tokens with the population variance and rsqrt(clamp(var, 1e-8))."""
  rewards = np.asarray(r, np.float64).reshape(-1, group_size)
  rewards = (rewards - rewards.mean(-1, keepdims=True)).reshape(-1)
  adv = rewards[:, None] * mask
  mean = (adv * mask).sum() / mask.sum()
  var = ((adv - mean) ** 2 * mask).sum() / mask.sum()
  return (adv - mean) / np.sqrt(max(var, 1e-8))


@JIT
@pytest.mark.parametrize("group_size", [1, 3, 12])
def test_batch_raw_std_reproduces_trl_scale_rewards_batch(group_size, jit):
  got = call(rljax.group_advantages, REWARDS, group_size=group_size, scale="batch-raw-std",
             eps=1e-4, jit=jit)
  close(got, trl_advantages(REWARDS, group_size, "batch"), rtol=1e-4, atol=1e-5)
  # The centred-reward std of 'batch-std' is a different estimator: it is larger here.
  other = rljax.group_advantages(REWARDS, group_size, scale="batch-std", eps=1e-4)
  if group_size == 3:  # one group of 12 has one mean, and the two stds coincide
    assert np.max(np.abs(np.asarray(other) - trl_advantages(REWARDS, group_size, "batch"))) > 0.1


@pytest.mark.parametrize("group_size", [3, 12])
def test_group_scales_reproduce_trl_group_and_none(group_size):
  close(rljax.group_advantages(REWARDS, group_size, scale="std", eps=1e-4),
        trl_advantages(REWARDS, group_size, "group"), rtol=1e-4, atol=1e-5)
  close(rljax.group_advantages(REWARDS, group_size, scale="none"),
        trl_advantages(REWARDS, group_size, "none"), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("group_size", [3, 12])
def test_batch_raw_std_reproduces_trinity_std_cal_level_batch(group_size):
  close(rljax.group_advantages(REWARDS, group_size, scale="batch-raw-std"),
        trinity_grpo_batch_advantages(REWARDS, group_size), rtol=1e-4, atol=1e-5)


def test_batch_raw_std_hand_values_and_extremes():
  # Groups (0, 0, 1, 1) and (1, 1, 1, 1): raw (n-1) std over the batch sqrt(1.5 / 7) = 0.462910,
  # centred std sqrt(1 / 7) = 0.377964; eps 1e-4 as TRL.
  r = np.array([0, 0, 1, 1, 1, 1, 1, 1], np.float32)
  raw = rljax.group_advantages(r, 4, scale="batch-raw-std", eps=1e-4)
  close(raw, [-1.079890, -1.079890, 1.079890, 1.079890, 0, 0, 0, 0], rtol=1e-5)
  centred = rljax.group_advantages(r, 4, scale="batch-std", eps=1e-4)
  close(centred, [-1.322526, -1.322526, 1.322526, 1.322526, 0, 0, 0, 0], rtol=1e-5)
  # The raw variance adds the spread of the group means: never larger than batch-std.
  rng = np.random.default_rng(5)
  for _ in range(5):
    x = rng.normal(size=24).astype(np.float32) + rng.normal(size=6).repeat(4).astype(np.float32)
    a = np.abs(np.asarray(rljax.group_advantages(x, 4, scale="batch-raw-std")))
    b = np.abs(np.asarray(rljax.group_advantages(x, 4, scale="batch-std")))
    assert np.all(a <= b * (1 + 1e-6))
  jitted = jax.jit(functools.partial(rljax.group_advantages, scale="batch-raw-std"),
                   static_argnums=1)
  # Zero-variance batch, a batch of one, and a large common offset: finite, and 0 where no spread.
  for x, g in [(np.full(8, 3.0, np.float32), 4), (np.full(8, 3.0, np.float32), 1),
               (np.array([7.0], np.float32), 1)]:
    for out in (rljax.group_advantages(x, g, scale="batch-raw-std"), jitted(x, g)):
      assert np.all(np.asarray(out) == 0), (x, g)
  big = np.array([1e6, 1e6 + 1, 1e6 + 2, 1e6 + 3], np.float32)
  close(jitted(big, 2), trinity_grpo_batch_advantages(big, 2), rtol=1e-4)
  # Rewards are data.
  g = jax.grad(lambda x: rljax.group_advantages(x, 3, scale="batch-raw-std").sum())(
      jnp.asarray(REWARDS))
  assert np.all(np.asarray(g) == 0)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices (tests/conftest.py)")
@pytest.mark.parametrize("scale", ["batch-raw-std", "batch-std", "std"])
def test_batch_scales_on_a_sharded_batch_equal_one_device(scale):
  """Groups of 4 over 8 devices (2 rows each): the batch std reduces over every shard, as TRL's
  gathered rewards do."""
  r = np.random.default_rng(6).normal(size=16).astype(np.float32)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:8])
  sharded = jax.device_put(r, NamedSharding(mesh, P("data")))
  fn = jax.jit(functools.partial(rljax.group_advantages, group_size=4, scale=scale, eps=1e-4))
  got = fn(sharded)
  assert len(got.sharding.device_set) == 8
  np.testing.assert_allclose(np.asarray(got), np.asarray(fn(jax.device_put(r, jax.devices()[0]))),
                             rtol=1e-6, atol=1e-6)
  peer = {"batch-raw-std": "batch", "std": "group"}.get(scale)
  if peer:
    close(got, trl_advantages(r, 4, peer), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("group_size", [2, 3, 12])
def test_std_scale_reproduces_verl_and_tunix_grpo(group_size):
  got = rljax.group_advantages(REWARDS, group_size)
  close(got, verl_grpo_advantages(REWARDS, group_size), rtol=1e-4, atol=1e-5)
  r = np.random.default_rng(7).normal(size=12).astype(np.float32)  # tunix has no flat-group case
  close(rljax.group_advantages(r, group_size), tunix_grpo_advantages(r, group_size), rtol=1e-4,
        atol=1e-5)


def test_singleton_groups_differ_from_verl_as_documented():
  # verl's singleton keeps its raw reward (mean 0, std 1); rljax gives 0.
  close(verl_grpo_advantages(REWARDS, 1), REWARDS / (1 + 1e-6), rtol=1e-6)
  assert np.all(np.asarray(rljax.group_advantages(REWARDS, 1)) == 0)


@pytest.mark.parametrize("group_size", [1, 2, 3, 4])
def test_rloo_reproduces_verl_rloo_vectorized(group_size):
  close(rljax.rloo_advantages(REWARDS, group_size), verl_rloo_vectorized(REWARDS, group_size),
        rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("length", [1, 5])
def test_batch_std_is_the_sequence_level_reinforce_pp_baseline(length):
  """With every completion L valid tokens long, verl's token whitening is batch-std times
  sqrt((nL-1)/(L(n-1))) and OpenRLHF's is batch-std times sqrt(n/(n-1)) (eps aside)."""
  r = np.random.default_rng(8).normal(size=12).astype(np.float32)
  n = r.size
  mask = np.zeros((n, 7))
  mask[:, :length] = 1.0
  ours = np.asarray(rljax.group_advantages(r, 3, scale="batch-std", eps=0.0), np.float64)
  verl = verl_reinforce_pp_baseline(r, 3, mask)
  close(verl, ours[:, None] * mask * np.sqrt((n * length - 1) / (length * (n - 1))), rtol=1e-4,
        atol=1e-5)
  openrlhf = openrlhf_reinforce_baseline(r, 3, mask)
  close(openrlhf, ours[:, None] * mask * np.sqrt(n / (n - 1)), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- RLOO


@JIT
@pytest.mark.parametrize("group_size", [1, 2, 3, 4])
def test_rloo_matches_numpy(group_size, jit):
  r = REWARDS[:12]
  close(call(rljax.rloo_advantages, r, group_size=group_size, jit=jit), np_rloo(r, group_size),
        rtol=1e-5, atol=1e-4)


def test_rloo_identities():
  # Hand value from the docstring of the paper's estimator.
  close(rljax.rloo_advantages(np.array([1., 0., 0.], np.float32), 3), [1.0, -0.5, -0.5])
  # G/(G-1) (r_i - mean) == r_i - mean_{j != i} r_j == G/(G-1) * Dr. GRPO advantage.
  r = np.random.default_rng(0).normal(size=20).astype(np.float32)
  close(rljax.rloo_advantages(r, 5),
        5 / 4 * np.asarray(rljax.group_advantages(r, 5, scale="none"), np.float64), rtol=1e-5)
  close(jax.vmap(functools.partial(rljax.rloo_advantages, group_size=4))(np.stack([r, -r])),
        [np_rloo(r, 4), np_rloo(-r, 4)], atol=1e-5)


# --------------------------------------------------------------------------- global baseline


@JIT
def test_global_baseline_ragged_ids(jit):
  rng = np.random.default_rng(1)
  ids = np.array([2, 0, 0, 3, 2, 2, 0, 3, 3, 3, 2], np.int32)   # ragged; group 1 has no sample
  r = rng.normal(size=ids.size).astype(np.float32)
  mask = np.array([1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1], np.float32)
  got = call(rljax.global_baseline_advantages, r, ids, jit=jit, num_groups=4)
  close(got, np_global_baseline(r, ids, np.ones_like(mask)), atol=1e-5)
  got = call(functools.partial(rljax.global_baseline_advantages, mask=mask), r, ids,
             jit=False, num_groups=4)
  close(got, np_global_baseline(r, ids, mask), atol=1e-5)
  # Equal-size contiguous groups: identical to Dr. GRPO's group mean baseline.
  r12 = REWARDS[:12]
  close(rljax.global_baseline_advantages(r12, np.repeat(np.arange(4), 3), 4),
        np_group_advantages(r12, 3, "none"), atol=1e-4)
  with pytest.raises(ValueError, match=r"group_ids must have shape \[11\]"):
    rljax.global_baseline_advantages(r, ids[:5], 4)
  with pytest.raises(ValueError, match="num_groups"):
    rljax.global_baseline_advantages(r, ids, 0)


# --------------------------------------------------------------------------- returns and GAE

TOKEN_MASK = np.array([[1, 1, 1, 1, 1, 1],
                       [1, 1, 1, 0, 0, 0],
                       [1, 0, 1, 1, 0, 1],    # gaps: masked positions are skipped
                       [0, 0, 0, 0, 0, 0]], np.float32)


def _token_data(seed=2):
  rng = np.random.default_rng(seed)
  rewards = rng.normal(size=TOKEN_MASK.shape).astype(np.float32)
  values = rng.normal(size=TOKEN_MASK.shape).astype(np.float32)
  return rewards, values


@JIT
@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_discounted_returns_match_python_loop(gamma, jit):
  rewards, _ = _token_data()
  dirty = np.where(TOKEN_MASK > 0, rewards, np.nan).astype(np.float32)  # masked: ignored
  got = call(rljax.discounted_returns, dirty, TOKEN_MASK, discount=gamma, jit=jit)
  close(got, py_discounted_returns(rewards.astype(np.float64), TOKEN_MASK, gamma), atol=1e-5)


@JIT
@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.99, 0.95), (0.9, 0.0)])
def test_gae_matches_python_loop(gamma, lam, jit):
  rewards, values = _token_data(3)
  adv, ret = call(rljax.gae_advantages, rewards, values, TOKEN_MASK, discount=gamma,
                  lambda_=lam, jit=jit)
  want_adv, want_ret = py_gae(rewards.astype(np.float64), values.astype(np.float64), TOKEN_MASK,
                              gamma, lam)
  close(adv, want_adv, atol=1e-5)
  close(ret, want_ret, atol=1e-5)


def test_gae_identities_vmap_and_errors():
  rewards, values = _token_data(4)
  # lambda = 1: A_t = G_t - V_t (Monte-Carlo return minus the value).
  adv, ret = rljax.gae_advantages(rewards, values, TOKEN_MASK, discount=0.9, lambda_=1.0)
  g = py_discounted_returns(rewards.astype(np.float64), TOKEN_MASK, 0.9)
  close(adv, np.where(TOKEN_MASK > 0, g - values, 0.0), atol=1e-5)
  close(ret, g, atol=1e-5)
  # Zero values, lambda = 1: advantages are the discounted returns.
  adv0, _ = rljax.gae_advantages(rewards, np.zeros_like(values), TOKEN_MASK, discount=0.9)
  close(adv0, py_discounted_returns(rewards.astype(np.float64), TOKEN_MASK, 0.9), atol=1e-5)
  # Values are data.
  gv = jax.grad(lambda v: rljax.gae_advantages(rewards, v, TOKEN_MASK)[0].sum())(
      jnp.asarray(values))
  assert np.all(np.asarray(gv) == 0)
  # vmap over an extra leading axis.
  rs, vs, ms = np.stack([rewards, -rewards]), np.stack([values, values]), np.stack([TOKEN_MASK] * 2)
  a, _ = jax.vmap(functools.partial(rljax.gae_advantages, discount=0.9, lambda_=0.5))(rs, vs, ms)
  close(a, [py_gae(rs[i].astype(np.float64), values.astype(np.float64), TOKEN_MASK, 0.9, 0.5)[0]
            for i in range(2)], atol=1e-5)
  close(jax.vmap(rljax.discounted_returns)(rs, ms),
        [py_discounted_returns(rs[i].astype(np.float64), TOKEN_MASK, 1.0) for i in range(2)],
        atol=1e-5)
  with pytest.raises(ValueError, match="values must have the same shape"):
    rljax.gae_advantages(rewards, values[:, :2], TOKEN_MASK)
  with pytest.raises(ValueError, match="mask must have the same shape"):
    rljax.discounted_returns(rewards, TOKEN_MASK[:2])


def test_global_baseline_rejects_out_of_range_group_ids():
  with pytest.raises(ValueError, match="group_ids must lie in"):
    rljax.global_baseline_advantages(jnp.ones(3), jnp.array([0, 1, 3]), 2)
  with pytest.raises(ValueError, match="group_ids must lie in"):
    rljax.global_baseline_advantages(jnp.ones(2), jnp.array([-1, 0]), 2)
