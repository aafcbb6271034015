"""Tests of truncated_is_weights (TIS / MIS rollout-vs-trainer correction)."""

import functools

import hypothesis
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rljax
from tests import tabular
from tests.test_ppo import make_batch


def np_is_weights(mu, old, m, *, cap, level, mode, lower=None, clamp=20.0):
  """Weights [B, T] (float64): ρ = π_old / μ per token or per sequence (product)."""
  valid = m > 0
  d = np.where(valid, np.where(valid, old, 0.0).astype(np.float64) - np.where(valid, mu, 0.0), 0)
  d = np.clip(d, -clamp, clamp)
  if level == "token":
    rho = np.exp(d)
  else:
    rho = np.repeat(np.exp(np.clip(d.sum(-1), -clamp, clamp))[:, None], d.shape[1], 1)
  lo = 0.0 if lower is None else lower
  w = np.clip(rho, lo, cap) if mode == "truncate" else np.where((rho > cap) | (rho < lo), 0, rho)
  return np.where(valid, w, 0.0), rho


@functools.partial(jax.jit, static_argnames=("level", "mode", "no_lower"))
def _weights(mu, old, mask, cap, lower, *, level, mode, no_lower):
  return rljax.truncated_is_weights(mu, old, mask, cap=cap, level=level, mode=mode,
                                    lower=None if no_lower else lower)


CASES = [("token", "truncate", None), ("token", "mask", 0.5), ("sequence", "truncate", 0.5),
         ("sequence", "mask", None)]


@pytest.mark.parametrize("level,mode,lower", CASES)
def test_weights_and_metrics_match_numpy(level, mode, lower):
  mu, old, _, mask, _ = make_batch(40, b=6, spread=0.8)
  w, metrics = _weights(mu, old, mask, 2.0, 0.0 if lower is None else lower, level=level,
                        mode=mode, no_lower=lower is None)
  ref, rho = np_is_weights(mu, old, mask, cap=2.0, level=level, mode=mode, lower=lower)
  np.testing.assert_allclose(np.asarray(w), ref, rtol=1e-5, atol=1e-7)
  v = mask > 0
  lo = 0.0 if lower is None else lower
  outside = v & ((rho > 2.0) | (rho < lo))
  assert 0 < outside.sum() < v.sum()  # both regimes occur
  frac = outside.sum() / v.sum()
  np.testing.assert_allclose(float(metrics["truncated_frac"]), frac if mode == "truncate" else 0,
                             atol=1e-6)
  np.testing.assert_allclose(float(metrics["masked_frac"]), frac if mode == "mask" else 0,
                             atol=1e-6)
  np.testing.assert_allclose(float(metrics["is_weight_mean"]), ref[v].mean(), rtol=1e-5)
  stat = rho[v] if level == "token" else rho[:, 0][mask.sum(-1) > 0]
  np.testing.assert_allclose(float(metrics["is_ratio_max"]), stat.max(), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["is_ratio_mean"]), stat.mean(), rtol=1e-5)
  d = np.log(rho[v]) if level == "token" else None
  if d is not None:  # k3 estimate of KL(μ‖π_old) from tokens sampled under μ
    np.testing.assert_allclose(float(metrics["approx_kl"]), (np.exp(d) - 1 - d).mean(), rtol=1e-4)
  if (level, mode) == ("token", "truncate"):  # and without jit
    eager, _ = rljax.truncated_is_weights(mu, old, mask)
    np.testing.assert_allclose(np.asarray(eager), ref, rtol=1e-5, atol=1e-7)


_ppo_vg = jax.jit(jax.value_and_grad(
    lambda lp, old, adv, mask, w: rljax.ppo_clip_loss(lp, old, adv, mask, is_weights=w,
                                                      dual_clip=3.0).loss))
_ppo_vg_plain = jax.jit(jax.value_and_grad(
    lambda lp, old, adv, mask: rljax.ppo_clip_loss(lp, old, adv, mask, dual_clip=3.0).loss))


@pytest.mark.parametrize("level,mode,lower", CASES)
def test_sampler_equal_to_trainer_gives_unit_weights_and_plain_ppo(level, mode, lower):
  """μ = π_old: every weight is 1 (0 on masked tokens) and PPO is unchanged."""
  logp, old, adv, mask, _ = make_batch(41)
  w, metrics = _weights(old, old, mask, 2.0, 0.0 if lower is None else lower, level=level,
                        mode=mode, no_lower=lower is None)
  np.testing.assert_array_equal(np.asarray(w), mask)
  assert float(metrics["truncated_frac"]) == float(metrics["masked_frac"]) == 0.0
  assert float(metrics["ess"]) == 1.0
  with_w = _ppo_vg(logp, old, adv, mask, w)
  plain = _ppo_vg_plain(logp, old, adv, mask)
  np.testing.assert_array_equal(float(with_w[0]), float(plain[0]))
  np.testing.assert_array_equal(np.asarray(with_w[1]), np.asarray(plain[1]))


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_masked_importance_sampling_zeroes_the_gradient_of_dropped_tokens(level):
  logp, old, adv, mask, _ = make_batch(42)
  mu = np.where(mask > 0, old - np.random.default_rng(42).normal(0, 0.8, old.shape), -np.inf)
  mu = mu.astype(np.float32)
  w, _ = _weights(mu, old, mask, 2.0, 0.0, level=level, mode="mask", no_lower=True)
  w = np.asarray(w)
  _, g = _ppo_vg(old, old, np.nan_to_num(adv), mask, w)  # ratio 1: PPO clips nothing
  g = np.asarray(g)
  dropped = (mask > 0) & (w == 0)
  assert dropped.sum() > 0
  assert np.all(g[dropped] == 0)
  assert np.all(g[(mask > 0) & (w > 0)] != 0)
  if level == "sequence":  # whole rows are dropped
    n_dropped, n_valid = dropped.sum(-1), mask.sum(-1)
    assert np.all((n_dropped == 0) | (n_dropped == n_valid))


def test_weights_carry_no_gradient():
  mu, old, _, mask, _ = make_batch(43, spread=0.6)
  total = lambda a, b: sum(jnp.sum(rljax.truncated_is_weights(a, b, mask, level=lv, cap=1e3)[0])
                           for lv in ("token", "sequence"))
  grads = jax.jit(jax.grad(total, argnums=(0, 1)))(mu, old)
  assert all(np.all(np.asarray(g) == 0) for g in grads)


# ----------------------------------------------------------------------------- exact gradients

V, T_TAB = 3, 3
SEQS = jnp.asarray(tabular.all_sequences(V, T_TAB))
THETA = tabular.init_theta(jax.random.PRNGKey(44), V, T_TAB, scale=0.8)
THETA_MU = THETA + 0.4 * jax.random.normal(jax.random.PRNGKey(45), THETA.shape)
REWARDS = jnp.asarray(np.random.default_rng(44).normal(size=SEQS.shape[0]), jnp.float32)


@jax.jit
def _expected_gradients_under_mu(theta):
  probs = tabular.sequence_probs(theta, SEQS)
  mu_probs = tabular.sequence_probs(THETA_MU, SEQS)
  adv = REWARDS - jnp.sum(probs * REWARDS)

  def loss_fn(th, i, level):
    lp = tabular.token_logp(th, SEQS[i][None])
    mu = tabular.token_logp(THETA_MU, SEQS[i][None])
    ones = jnp.ones_like(lp)
    w, _ = rljax.truncated_is_weights(mu, lp, ones, cap=1e4, level=level)
    return rljax.ppo_clip_loss(lp, lp, adv[i][None], ones, is_weights=w,
                               aggregation="seq-mean-token-sum").loss
  return {level: tabular.expected_per_sequence_gradient(
      functools.partial(loss_fn, level=level), theta, SEQS, mu_probs)
          for level in ("sequence", "token")}


def test_untruncated_sequence_weights_give_the_exact_policy_gradient_under_mu():
  """Samples from μ ≠ π, weights Π_t π/μ: E_μ[∇ loss] = -∇ E_π[R] exactly. Per-token weights
  are not a trajectory ratio and do not (the reason sequence level exists)."""
  true = -np.asarray(tabular.true_gradient(THETA, SEQS, REWARDS))
  got = _expected_gradients_under_mu(THETA)
  np.testing.assert_allclose(np.asarray(got["sequence"]), true, rtol=1e-4, atol=1e-6)
  err = np.linalg.norm(np.asarray(got["token"]) - true) / np.linalg.norm(true)
  assert err > 1e-2


# ----------------------------------------------------------------------------- peers


def test_peer_keywords_reproduce_trl_and_verl_defaults():
  mu, old, _, mask, _ = make_batch(46, spread=0.5, ragged=False)
  mask[1, 3:] = 0
  v = mask > 0
  # TRL: vllm_importance_sampling_mode='sequence_mask', clip_max=3.0, product ratio, no clamp.
  rho = np.exp((np.where(v, old.astype(np.float64) - mu, 0)).sum(-1))
  trl = np.where(v, np.where(rho > 3.0, 0.0, rho)[:, None], 0.0)
  assert 0 < (rho > 3.0).sum() < 4
  w, _ = rljax.truncated_is_weights(mu, old, mask, level="sequence", mode="mask", cap=3.0,
                                    clamp=None)
  np.testing.assert_allclose(np.asarray(w), trl, rtol=1e-5)
  # verl: rollout_is='token', rollout_is_threshold=2.0, truncation from above, ±20 clamp.
  verl = np.where(v, np.minimum(np.exp(np.clip(old.astype(np.float64) - mu, -20, 20)), 2.0), 0)
  w, _ = rljax.truncated_is_weights(mu, old, mask)
  np.testing.assert_allclose(np.asarray(w), verl, rtol=1e-5)


# ----------------------------------------------------------------------------- robustness


@jax.jit
def _all_configs(mu, old, mask):
  return [rljax.truncated_is_weights(mu, old, mask, level=lv, mode=md, cap=2.0, lower=lo)
          for lv, md, lo in CASES]


_EXTREME = st.sampled_from([-1e4, -30.0, -1.0, -0.5, 0.0, 0.5, 1.0, 30.0, 1e4])


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(
    mu=hnp.arrays(np.float32, (3, 4), elements=_EXTREME),
    old=hnp.arrays(np.float32, (3, 4), elements=_EXTREME),
    mask=hnp.arrays(np.bool_, (3, 4)),
    filler=st.sampled_from([-np.inf, np.inf, np.nan, 1e4]))
def test_weights_are_bounded_and_finite_for_extreme_inputs(mu, old, mask, filler):
  mu, old = (np.where(mask, x, filler).astype(np.float32) for x in (mu, old))
  for (level, mode, lower), (w, metrics) in zip(CASES, _all_configs(mu, old, mask)):
    w = np.asarray(w)
    assert np.all(np.isfinite(w)) and np.all(w >= 0) and np.all(w <= 2.0)
    assert np.all(w[~mask] == 0)
    if mode == "truncate" and lower is not None:
      assert np.all(w[mask] >= lower)
    if mode == "mask" and lower is not None:
      assert np.all((w[mask] == 0) | (w[mask] >= lower))
    assert all(np.isfinite(float(x)) for x in metrics.values())


def test_vmap_over_a_leading_axis_matches_a_loop():
  batches = [make_batch(50 + i, spread=0.5) for i in range(3)]
  mu, old, mask = (np.stack([b[k] for b in batches]) for k in (0, 1, 3))
  fn = functools.partial(rljax.truncated_is_weights, level="sequence", mode="mask")
  w, metrics = jax.jit(jax.vmap(fn))(mu, old, mask)
  for i in range(3):
    wi, mi = fn(mu[i], old[i], mask[i])
    np.testing.assert_allclose(np.asarray(w[i]), np.asarray(wi), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["ess"][i]), float(mi["ess"]), rtol=1e-5)


def test_invalid_arguments_raise_value_errors_naming_them():
  x = np.zeros((2, 3), np.float32)
  with pytest.raises(ValueError, match=r"level='seq'.*\('token', 'sequence'\)"):
    rljax.truncated_is_weights(x, x, x, level="seq")
  with pytest.raises(ValueError, match=r"mode='clip'.*\('truncate', 'mask'\)"):
    rljax.truncated_is_weights(x, x, x, mode="clip")
  with pytest.raises(ValueError, match="cap"):
    rljax.truncated_is_weights(x, x, x, cap=0.0)
  with pytest.raises(ValueError, match="lower must be < cap"):
    rljax.truncated_is_weights(x, x, x, cap=2.0, lower=2.0)
  with pytest.raises(ValueError, match=r"old_logp must have the same shape as behavior_logp"):
    rljax.truncated_is_weights(x, x[:1], x)
  with pytest.raises(ValueError, match=r"behavior_logp must have shape \[\?, \?\]"):
    rljax.truncated_is_weights(x[0], x[0], x[0])
