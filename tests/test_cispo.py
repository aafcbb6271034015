"""Tests of cispo_loss (MiniMax-M1's clipped, stop-gradient IS weight times REINFORCE)."""

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
from tests.test_ppo import np_agg_weights
from tests.test_ppo import np_aggregate

MODES = rljax.AGGREGATION_MODES


def np_cispo(logp, old, adv, m, *, el, eh, mask_clipped=False, clamp=20.0, isw=None):
  """Per-token loss [B, T] and d loss_t / d logp_t [B, T] (float64)."""
  valid = m > 0
  lp = np.where(valid, logp, 0.0).astype(np.float64)
  d = np.where(valid, lp - np.where(valid, old, 0.0), 0.0)
  if clamp is not None:
    d = np.clip(d, -clamp, clamp)
  r = np.exp(d)
  a = np.where(valid, adv[:, None] if adv.ndim == 1 else adv, 0.0)
  floor = 0.0 if el is None else 1.0 - el
  w = np.clip(r, floor, 1.0 + eh)
  keep = np.ones_like(r)
  if mask_clipped:
    keep = 1.0 - (((a > 0) & (r > 1 + eh)) | ((a < 0) & (r < floor)))
  if isw is not None:
    keep = keep * isw
  return np.where(valid, -w * a * lp * keep, 0.0), np.where(valid, -w * a * keep, 0.0)


def _value_and_grad(logp, old, adv, mask, **kw):
  fn = lambda lp: rljax.cispo_loss(lp, old, adv, mask, **kw)
  (loss, metrics), grad = jax.value_and_grad(fn, has_aux=True)(logp)
  return loss, metrics, grad


@functools.partial(jax.jit, static_argnames=("mask_clipped", "low_is_none"))
def _all_modes(logp, old, adv, mask, isw, el, eh, *, mask_clipped, low_is_none):
  el = None if low_is_none else el
  return {mode: _value_and_grad(logp, old, adv, mask, epsilon_low=el, epsilon_high=eh,
                                mask_clipped=mask_clipped, is_weights=isw, aggregation=mode)
          for mode in MODES}


_jit_vg = jax.jit(_value_and_grad, static_argnames=("aggregation", "clamp", "mask_clipped"))
_ppo_vg = jax.jit(
    lambda lp, old, adv, mask, el, eh: jax.grad(
        lambda x: rljax.ppo_clip_loss(x, old, adv, mask, epsilon_low=el, epsilon_high=eh).loss)(lp))


@pytest.mark.parametrize("el,mask_clipped", [(None, False), (0.2, True)])
def test_values_gradients_and_metrics_match_numpy(el, mask_clipped):
  logp, old, adv, mask, isw = make_batch(20, spread=0.5)
  eh = 0.28
  out = _all_modes(logp, old, adv, mask, isw, 0.0 if el is None else el, eh,
                   mask_clipped=mask_clipped, low_is_none=el is None)
  ref_l, ref_g = np_cispo(logp, old, adv, mask, el=el, eh=eh, mask_clipped=mask_clipped,
                          isw=isw)
  for mode in MODES:
    loss, _, grad = out[mode]
    np.testing.assert_allclose(float(loss), np_aggregate(ref_l, mask, mode), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(grad), ref_g * np_agg_weights(mask, mode),
                               rtol=1e-5, atol=1e-7)
  metrics = out["token-mean"][1]
  v = mask > 0
  d = np.where(v, np.where(v, logp, 0.0).astype(np.float64) - np.where(v, old, 0.0), 0.0)
  r, a = np.exp(d), np.where(v, adv, 0.0)
  floor = 0.0 if el is None else 1 - el
  low, high = v & (a < 0) & (r < floor), v & (a > 0) & (r > 1 + eh)
  n = mask.sum()
  np.testing.assert_allclose(float(metrics["clip_frac_low"]), low.sum() / n, atol=1e-6)
  np.testing.assert_allclose(float(metrics["clip_frac_high"]), high.sum() / n, atol=1e-6)
  np.testing.assert_allclose(float(metrics["weight_clip_frac"]),
                             (v & ((r < floor) | (r > 1 + eh))).sum() / n, atol=1e-6)
  np.testing.assert_allclose(float(metrics["weight_mean"]),
                             np.clip(r, floor, 1 + eh)[v].mean(), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["masked_frac"]),
                             (low | high).sum() / n if mask_clipped else 0.0, atol=1e-6)
  assert high.sum() > 0 and (el is None or low.sum() > 0)  # the clipping regimes occur
  # Without jit, same numbers.
  eager = rljax.cispo_loss(logp, old, adv, mask, epsilon_low=el, epsilon_high=eh,
                           mask_clipped=mask_clipped, is_weights=isw)
  np.testing.assert_allclose(float(eager.loss), float(out["token-mean"][0]), rtol=1e-6)


V, T_TAB = 3, 3
SEQS = jnp.asarray(tabular.all_sequences(V, T_TAB))
THETA = tabular.init_theta(jax.random.PRNGKey(21), V, T_TAB, scale=0.8)
REWARDS = jnp.asarray(np.random.default_rng(21).normal(size=SEQS.shape[0]), jnp.float32)


@jax.jit
def _expected_gradient(theta):
  probs = tabular.sequence_probs(theta, SEQS)
  adv = REWARDS - jnp.sum(probs * REWARDS)

  def loss_fn(th, i):
    lp = tabular.token_logp(th, SEQS[i][None])
    return rljax.cispo_loss(lp, lp, adv[i][None], jnp.ones_like(lp), epsilon_high=0.28,
                            aggregation="seq-mean-token-sum").loss
  return tabular.expected_per_sequence_gradient(loss_fn, theta, SEQS, probs)


def test_gradient_at_ratio_one_is_the_exact_policy_gradient():
  true = tabular.true_gradient(THETA, SEQS, REWARDS)
  np.testing.assert_allclose(np.asarray(_expected_gradient(THETA)), -np.asarray(true),
                             rtol=1e-4, atol=1e-6)


# Ratios and advantages covering every region of the (ρ, sign A) plane for ε = 0.2 / 0.28.
_RATIO = np.array([[0.9, 1.0, 1.2, 0.9, 1.1, 1.5, 3.0, 0.5, 0.5, 1.5]])
_ADV = np.array([[1.0, -1.0, 2.0, -2.0, 0.5, 1.0, 2.0, -1.0, 1.0, -1.0]], np.float32)
_INSIDE = (_RATIO >= 0.8) & (_RATIO <= 1.28)


def _ratio_batch():
  old = np.full(_RATIO.shape, np.log(0.2), np.float32)
  return (old + np.log(_RATIO)).astype(np.float32), old, _ADV, np.ones(_RATIO.shape, np.float32)


def test_gradient_equals_ppo_inside_the_window_and_is_capped_outside():
  """Inside [1-ε_low, 1+ε_high] CISPO's gradient is PPO's, ρ A ∇logp; for A > 0 and ρ > 1+ε_high
  PPO's is 0 and CISPO's is (1+ε_high) A ∇logp; for A < 0 and ρ < 1-ε_low, (1-ε_low) A ∇logp."""
  logp, old, adv, mask = _ratio_batch()
  n = mask.size
  _, _, g = _jit_vg(logp, old, adv, mask, epsilon_low=0.2, epsilon_high=0.28,
                    aggregation="token-mean", clamp=20.0, mask_clipped=False)
  g_ppo = _ppo_vg(logp, old, adv, mask, 0.2, 0.28)
  g, g_ppo = np.asarray(g), np.asarray(g_ppo)
  np.testing.assert_allclose(g[_INSIDE], g_ppo[_INSIDE], rtol=1e-5)
  np.testing.assert_allclose(g[_INSIDE], (-_RATIO * _ADV)[_INSIDE] / n, rtol=1e-5)
  high = (_ADV > 0) & (_RATIO > 1.28)
  low = (_ADV < 0) & (_RATIO < 0.8)
  assert high.sum() == 2 and low.sum() == 1
  assert np.all(g_ppo[high | low] == 0)
  np.testing.assert_allclose(g[high], -1.28 * _ADV[high] / n, rtol=1e-5)
  np.testing.assert_allclose(g[low], -0.8 * _ADV[low] / n, rtol=1e-5)


def test_mask_clipped_zeroes_exactly_the_tokens_ppo_clips():
  logp, old, adv, mask = _ratio_batch()
  n = mask.size
  _, metrics, g = _jit_vg(logp, old, adv, mask, epsilon_low=0.2, epsilon_high=0.28,
                          aggregation="token-mean", clamp=20.0, mask_clipped=True)
  g_ppo = np.asarray(_ppo_vg(logp, old, adv, mask, 0.2, 0.28))
  g = np.asarray(g)
  ppo_zero = ((_ADV > 0) & (_RATIO > 1.28)) | ((_ADV < 0) & (_RATIO < 0.8))
  np.testing.assert_array_equal(g == 0, ppo_zero)
  np.testing.assert_allclose(float(metrics["masked_frac"]), ppo_zero.mean(), rtol=1e-6)
  # Outside the window on the side PPO leaves unclipped, the weight is still capped.
  rest = ~ppo_zero & ~_INSIDE
  np.testing.assert_allclose(g[rest], -np.clip(_RATIO, 0.8, 1.28)[rest] * _ADV[rest] / n,
                             rtol=1e-5)
  np.testing.assert_allclose(g[_INSIDE], g_ppo[_INSIDE], rtol=1e-5)


# ----------------------------------------------------------------------------- peers


def test_unset_epsilon_high_is_an_error_not_a_silent_cap_at_0_2():
  """Regression for TRL's footgun: an unset epsilon_high there becomes an absolute cap of 0.2,
  so every on-policy token gets weight 0.2. Here epsilon_high is required, and with 0.2 it means
  a cap of 1.2: on-policy weights are exactly 1 and the loss is REINFORCE's."""
  logp, _, adv, mask, _ = make_batch(22)
  with pytest.raises(TypeError, match="epsilon_high"):
    rljax.cispo_loss(logp, logp, adv, mask)  # pylint: disable=missing-kwoa
  out = rljax.cispo_loss(logp, logp, adv, mask, epsilon_high=0.2)
  reinforce = rljax.reinforce_loss(logp, np.nan_to_num(adv), mask)
  np.testing.assert_allclose(float(out.loss), float(reinforce.loss), rtol=1e-6)
  assert float(out.metrics["weight_mean"]) == 1.0
  trl_unset, _ = np_cispo(logp, logp, adv, mask, el=None, eh=0.2 - 1.0)  # min(ρ, 0.2)
  trl_unset = np_aggregate(trl_unset, mask, "token-mean")
  np.testing.assert_allclose(trl_unset, 0.2 * float(reinforce.loss), rtol=1e-5)
  assert abs(float(out.loss) - trl_unset) > 0.1 * abs(trl_unset)


def _np_trl_cispo(logp, old, adv, m, cap):
  """TRL loss_type='cispo': -sg(min(ρ, cap)) A logp, no clamp, global token mean."""
  r = np.exp(logp.astype(np.float64) - old)
  return (-np.minimum(r, cap) * adv[:, None] * logp * m).sum() / m.sum()


@pytest.mark.parametrize("peer", ["trl", "verl", "trinity"])
def test_peer_keywords_reproduce_the_peers(peer):
  logp, old, _, mask, _ = make_batch(23, spread=1.5, ragged=False)
  adv = np.array([1.0, -1.0, 2.0, -0.5], np.float32)
  if peer == "trl":  # absolute cap 5.0 (TRL's recommended value)
    ref = _np_trl_cispo(logp, old, adv, mask, 5.0)
    got = rljax.cispo_loss(logp, old, adv, mask, epsilon_high=4.0, clamp=None)
  elif peer == "verl":  # clip_ratio_low = clip_ratio_high = 0.2, ±20 clamp
    ref_l, _ = np_cispo(logp, old, adv, mask, el=0.2, eh=0.2)
    ref = np_aggregate(ref_l, mask, "token-mean")
    got = rljax.cispo_loss(logp, old, adv, mask, epsilon_low=0.2, epsilon_high=0.2)
  else:  # Trinity-RFT: clip_range_low 1.0, clip_range_high 0.28, no clamp
    r = np.exp(logp.astype(np.float64) - old)
    ref = (-np.clip(r, 0.0, 1.28) * adv[:, None] * logp).mean()
    got = rljax.cispo_loss(logp, old, adv, mask, epsilon_low=1.0, epsilon_high=0.28, clamp=None)
  np.testing.assert_allclose(float(got.loss), ref, rtol=1e-5)
  assert float(got.metrics["weight_clip_frac"]) > 0


# ----------------------------------------------------------------------------- robustness


@jax.jit
def _robust(logp, old, adv, mask):
  return [
      _value_and_grad(logp, old, adv, mask, epsilon_high=0.28),
      _value_and_grad(logp, old, adv, mask, epsilon_low=0.2, epsilon_high=4.0, mask_clipped=True,
                      aggregation="seq-mean-token-mean"),
  ]


_EXTREME = st.sampled_from([-1e4, -30.0, -1.0, 0.0, 1.0, 30.0, 1e4])


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(
    logp=hnp.arrays(np.float32, (3, 4), elements=_EXTREME),
    old=hnp.arrays(np.float32, (3, 4), elements=_EXTREME),
    adv=hnp.arrays(np.float32, (3, 4), elements=st.sampled_from([-5.0, 0.0, 1.0])),
    mask=hnp.arrays(np.bool_, (3, 4)),
    filler=st.sampled_from([-np.inf, np.nan, 1e4]))
def test_extreme_inputs_give_finite_loss_and_gradients(logp, old, adv, mask, filler):
  logp, old, adv = (np.where(mask, x, filler).astype(np.float32) for x in (logp, old, adv))
  for loss, metrics, grad in _robust(logp, old, adv, mask.astype(np.float32)):
    assert np.isfinite(float(loss))
    assert np.all(np.isfinite(np.asarray(grad)))
    assert np.all(np.asarray(grad)[~mask] == 0)
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_vmap_over_a_leading_axis_matches_a_loop():
  batches = [make_batch(30 + i) for i in range(3)]
  stack = [np.stack([b[k] for b in batches]) for k in range(4)]
  fn = functools.partial(rljax.cispo_loss, epsilon_high=0.28, mask_clipped=True)
  vmapped = jax.jit(jax.vmap(fn))(*stack)
  for i, b in enumerate(batches):
    np.testing.assert_allclose(float(vmapped.loss[i]), float(fn(*b[:4]).loss), rtol=1e-5)


def test_invalid_arguments_raise_value_errors_naming_them():
  x = np.zeros((2, 3), np.float32)
  a = np.ones(2, np.float32)
  with pytest.raises(ValueError, match="epsilon_high"):
    rljax.cispo_loss(x, x, a, x, epsilon_high=-0.1)
  with pytest.raises(ValueError, match="epsilon_low"):
    rljax.cispo_loss(x, x, a, x, epsilon_low=-1.0, epsilon_high=0.2)
  with pytest.raises(ValueError, match="mask_clipped"):
    rljax.cispo_loss(x, x, a, x, epsilon_high=0.2, mask_clipped=1)
  with pytest.raises(ValueError, match="aggregation='sum'"):
    rljax.cispo_loss(x, x, a, x, epsilon_high=0.2, aggregation="sum")
  with pytest.raises(ValueError, match="old_logp must have the same shape"):
    rljax.cispo_loss(x, x.T, a, x, epsilon_high=0.2)
