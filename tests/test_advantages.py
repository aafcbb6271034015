"""Advantages and baselines against NumPy float64 / plain Python loops, eager, jitted and vmapped.

Group advantages (GRPO std, Dr. GRPO none, REINFORCE++ batch-std) including singleton and
zero-variance groups, RLOO, the global per-prompt baseline with ragged group ids, discounted
returns and GAE (with masks that have gaps).
"""

import functools

import jax
import jax.numpy as jnp
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
  else:
    adv = centred / (np.std(centred, ddof=1) + eps) if centred.size > 1 else np.zeros_like(r)
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
