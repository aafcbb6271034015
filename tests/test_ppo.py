"""Tests of ppo_clip_loss (PPO / GRPO / DAPO clip-higher / dual-clip / GSPO-token).

Values and gradients are checked against an independent float64 NumPy implementation written
here; the policy-gradient claims against exact enumeration on the tabular policy of
tests/tabular.py. One jitted function per purpose, reused across parametrized cases.
"""

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

MODES = rljax.AGGREGATION_MODES


# ----------------------------------------------------------------------------- NumPy reference


def np_aggregate(v, m, mode):
  """Independent float64 aggregation (empty rows excluded; Dr. GRPO constant B * T)."""
  v = np.where(m > 0, v, 0.0) * m
  lens = m.sum(-1)
  ne = lens > 0
  if mode == "token-mean":
    return v.sum() / max(m.sum(), 1.0)
  if mode == "seq-mean-token-sum-norm":
    return v.sum() / (m.shape[0] * m.shape[1])
  per = v.sum(-1)[ne] / lens[ne] if mode == "seq-mean-token-mean" else v.sum(-1)[ne]
  return per.sum() / max(ne.sum(), 1)


def np_agg_weights(m, mode):
  """d aggregate / d value for each token (the aggregation is linear in the values)."""
  lens = m.sum(-1, keepdims=True)
  ne = (lens > 0).sum()
  if mode == "token-mean":
    return m / max(m.sum(), 1.0)
  if mode == "seq-mean-token-sum-norm":
    return m / (m.shape[0] * m.shape[1])
  if mode == "seq-mean-token-mean":
    return m / np.maximum(lens, 1.0) / max(ne, 1)
  return m / max(ne, 1)


def np_ppo(logp, old, adv, m, *, el, eh, dual=None, level="token", clamp=20.0, isw=None):
  """Per-token loss [B, T] and d loss_t / d logp_t [B, T] (float64)."""
  logp, old, adv, m = (np.asarray(x, np.float64) for x in (logp, old, adv, m))
  valid = m > 0
  d = np.where(valid, np.where(valid, logp, 0) - np.where(valid, old, 0), 0.0)
  live = np.ones_like(d)
  if clamp is not None:
    live = (np.abs(d) < clamp).astype(np.float64)
    d = np.clip(d, -clamp, clamp)
  if adv.ndim == 1:
    adv = np.repeat(adv[:, None], d.shape[1], 1)
  adv = np.where(valid, adv, 0.0)
  if level == "token":
    r = np.exp(d)
  else:
    s = (d * m).sum(-1) / np.maximum(m.sum(-1), 1.0)
    if clamp is not None:
      s = np.clip(s, -clamp, clamp)
    r = np.repeat(np.exp(s)[:, None], d.shape[1], 1)
  unclipped, clipped = -adv * r, -adv * np.clip(r, 1 - el, 1 + eh)
  loss = np.maximum(unclipped, clipped)
  grad = np.where(unclipped >= clipped, -adv * r, 0.0) * live
  if dual is not None:
    capped = (adv < 0) & (loss > -adv * dual)
    loss = np.where(capped, -adv * dual, loss)
    grad = np.where(capped, 0.0, grad)
  w = np.ones_like(d) if isw is None else np.asarray(isw, np.float64)
  return np.where(valid, loss * w, 0.0), np.where(valid, grad * w, 0.0)


def make_batch(seed, b=4, t=6, spread=0.3, ragged=True):
  """Random batch; `ragged`: ragged mask, an empty last row, -inf in masked slots."""
  rng = np.random.default_rng(seed)
  logp = -rng.uniform(0.05, 3.0, (b, t))
  old = logp + rng.normal(0.0, spread, (b, t))
  lens = rng.integers(1, t + 1, b) if ragged else np.full(b, t)
  if ragged:
    lens[-1] = 0
  mask = (np.arange(t)[None, :] < lens[:, None]).astype(np.float32)
  adv = rng.normal(size=(b, t))
  isw = rng.uniform(0.2, 2.0, (b, t))
  logp = np.where(mask > 0, logp, -np.inf)
  old = np.where(mask > 0, old, -np.inf)
  adv = np.where(mask > 0, adv, np.nan)
  f32 = lambda x: np.asarray(x, np.float32)
  return f32(logp), f32(old), f32(adv), mask, f32(isw)


# ----------------------------------------------------------------------------- jitted functions


def _value_and_grad(logp, old, adv, mask, **kw):
  fn = lambda lp: rljax.ppo_clip_loss(lp, old, adv, mask, **kw)
  (loss, metrics), grad = jax.value_and_grad(fn, has_aux=True)(logp)
  return loss, metrics, grad


@functools.partial(jax.jit, static_argnames=("level",))
def _all_modes(logp, old, adv, mask, isw, el, eh, dual, *, level):
  """Loss, metrics and gradient for every aggregation mode, in one compiled function."""
  return {mode: _value_and_grad(logp, old, adv, mask, epsilon_low=el, epsilon_high=eh,
                                dual_clip=dual, level=level, is_weights=isw, aggregation=mode)
          for mode in MODES}


_jit_vg = jax.jit(_value_and_grad, static_argnames=("level", "aggregation", "clamp"))


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("level,dual", [("token", None), ("sequence", 3.0)])
def test_values_gradients_and_clip_metrics_match_numpy(level, dual):
  logp, old, adv, mask, isw = make_batch(0, spread=0.4)
  el, eh = 0.2, 0.28
  out = _all_modes(logp, old, adv, mask, isw, el, eh, dual, level=level)
  ref_l, ref_g = np_ppo(logp, old, adv, mask, el=el, eh=eh, dual=dual, level=level, isw=isw)
  for mode in MODES:
    loss, metrics, grad = out[mode]
    np.testing.assert_allclose(float(loss), np_aggregate(ref_l, mask, mode), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(grad), ref_g * np_agg_weights(mask, mode),
                               rtol=1e-5, atol=1e-7)
    assert np.all(np.isfinite(np.asarray(grad)))
  # Metrics (same for every mode), against NumPy.
  metrics = out["token-mean"][1]
  a = np.where(mask > 0, adv, 0.0).astype(np.float64)
  v = mask > 0
  d = np.where(v, np.where(v, logp, 0.0).astype(np.float64) - np.where(v, old, 0.0), 0.0)
  if level == "token":
    r = np.exp(d)
  else:
    r = np.repeat(np.exp((d * mask).sum(-1) / np.maximum(mask.sum(-1), 1))[:, None], 6, 1)
  low, high = v & (a < 0) & (r < 1 - el), v & (a > 0) & (r > 1 + eh)
  n = mask.sum()
  np.testing.assert_allclose(float(metrics["clip_frac_low"]), low.sum() / n, atol=1e-6)
  np.testing.assert_allclose(float(metrics["clip_frac_high"]), high.sum() / n, atol=1e-6)
  np.testing.assert_allclose(float(metrics["clip_frac"]), (low | high).sum() / n, atol=1e-6)
  dual_ref = (v & (a < 0) & (r > dual)).sum() / n if dual else 0.0
  np.testing.assert_allclose(float(metrics["dual_clip_frac"]), dual_ref, atol=1e-6)
  np.testing.assert_allclose(float(metrics["approx_kl"]),
                             (np.exp(d) - 1 - d)[v].mean(), rtol=1e-4)
  np.testing.assert_allclose(float(metrics["is_weight_mean"]), isw[v].mean(), rtol=1e-5)
  seq = (d * mask).sum(-1)[mask.sum(-1) > 0]
  wts = np.exp(seq - seq.max())
  np.testing.assert_allclose(float(metrics["ess"]),
                             wts.sum() ** 2 / (len(wts) * (wts ** 2).sum()), rtol=1e-4)
  if level == "token":
    np.testing.assert_allclose(float(metrics["ratio_max"]), r[v].max(), rtol=1e-5)
  else:
    np.testing.assert_allclose(float(metrics["ratio_mean"]),
                               r[:, 0][mask.sum(-1) > 0].mean(), rtol=1e-5)


def test_eager_equals_jit_and_sequence_advantages_broadcast():
  level = "sequence"
  logp, old, adv, mask, _ = make_batch(1)
  seq_adv = np.nan_to_num(adv[:, 0])
  eager = rljax.ppo_clip_loss(logp, old, seq_adv, mask, level=level)
  jitted = _jit_vg(logp, old, np.repeat(seq_adv[:, None], 6, 1), mask, level=level,
                   aggregation=None, clamp=20.0)
  np.testing.assert_allclose(float(eager.loss), float(jitted[0]), rtol=1e-6)
  for k, v in eager.metrics.items():
    np.testing.assert_allclose(float(v), float(jitted[1][k]), rtol=1e-5, atol=1e-7, err_msg=k)


def test_level_defaults_are_the_papers():
  """Token level: ε 0.2/0.2, token-mean. Sequence level (GSPO): 3e-4/4e-4, seq-mean-token-mean."""
  logp, old, adv, mask, _ = make_batch(2, spread=0.01)
  for level, (el, eh), mode in [("token", (0.2, 0.2), "token-mean"),
                                ("sequence", (3e-4, 4e-4), "seq-mean-token-mean")]:
    default = rljax.ppo_clip_loss(logp, old, adv, mask, level=level)
    explicit = rljax.ppo_clip_loss(logp, old, adv, mask, level=level, epsilon_low=el,
                                   epsilon_high=eh, aggregation=mode)
    np.testing.assert_allclose(float(default.loss), float(explicit.loss), rtol=1e-6)
    assert float(default.metrics["clip_frac"]) == float(explicit.metrics["clip_frac"])
  seq = rljax.ppo_clip_loss(logp, old, adv, mask, level="sequence")
  assert float(seq.metrics["clip_frac"]) > 0  # 3e-4 is tight enough to clip here.


# ----------------------------------------------------------------------------- exact gradients


V, T_TAB = 3, 3
SEQS = jnp.asarray(tabular.all_sequences(V, T_TAB))
THETA = tabular.init_theta(jax.random.PRNGKey(3), V, T_TAB, scale=0.8)
REWARDS = jnp.asarray(np.random.default_rng(3).normal(size=SEQS.shape[0]), jnp.float32)


@functools.partial(jax.jit, static_argnames=("level",))
def _expected_single_sequence_gradient(theta, *, level):
  probs = tabular.sequence_probs(theta, SEQS)
  adv = REWARDS - jnp.sum(probs * REWARDS)  # R - E[R]: a constant baseline.

  def loss_fn(th, i):
    lp = tabular.token_logp(th, SEQS[i][None])
    return rljax.ppo_clip_loss(lp, lp, adv[i][None], jnp.ones_like(lp), level=level,
                               aggregation="seq-mean-token-sum").loss
  return tabular.expected_per_sequence_gradient(loss_fn, theta, SEQS, probs)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_gradient_at_ratio_one_is_the_exact_policy_gradient(level):
  """old_logp = logp (ratio 1): E_y[∇ loss] = -∇ E[R] exactly, by enumeration of 27 sequences."""
  true = tabular.true_gradient(THETA, SEQS, REWARDS)
  got = _expected_single_sequence_gradient(THETA, level=level)
  np.testing.assert_allclose(np.asarray(got), -np.asarray(true), rtol=1e-4, atol=1e-6)
  assert float(jnp.max(jnp.abs(true))) > 1e-2


@jax.jit
def _expected_group_gradients(theta):
  probs = tabular.sequence_probs(theta, SEQS)
  return {b: tabular.expected_group_gradient(functools.partial(_group_loss, baseline=b), theta,
                                             SEQS, probs, 2) for b in ("rloo", "mean")}


def _group_loss(th, idx, baseline):
  lp = tabular.token_logp(th, SEQS[idx])
  r = REWARDS[idx]
  if baseline == "rloo":
    adv = rljax.rloo_advantages(r, 2)
  else:
    adv = rljax.group_advantages(r, 2, scale="none")  # GRPO's group mean, no std
  return rljax.ppo_clip_loss(lp, lp, adv, jnp.ones_like(lp),
                             aggregation="seq-mean-token-sum").loss


def test_group_gradient_at_ratio_one():
  """Groups of G = 2 over all 27^2 pairs: RLOO is unbiased, the group mean gives (G-1)/G."""
  true = np.asarray(tabular.true_gradient(THETA, SEQS, REWARDS))
  got = _expected_group_gradients(THETA)
  np.testing.assert_allclose(np.asarray(got["rloo"]), -true, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(got["mean"]), -0.5 * true, rtol=1e-4, atol=1e-6)


def test_gspo_token_gradient_is_the_sequence_gspo_gradient():
  """Constant advantages, seq-mean-token-mean: ∇ = -(1/G) Σ_i A_i s_i (1/|y_i|) Σ_t ∇logp_it."""
  logp, _, _, mask, _ = make_batch(4, b=5, spread=0.0)
  # Row 0 inside the window; row 1 s < 1 - ε_low with A < 0 and row 2 s > 1 + ε_high with
  # A > 0 (clipped); row 3 s > 1 + ε_high with A < 0 (unclipped branch); row 4 empty.
  shift = np.array([[1e-5], [1e-2], [-1e-2], [-1e-2], [0.0]])
  old = np.where(mask > 0, logp + shift, -np.inf).astype(np.float32)
  adv = np.array([1.0, -1.0, 1.0, -1.0, 0.5], np.float32)
  loss, metrics, grad = _jit_vg(logp, old, adv, mask, level="sequence", aggregation=None,
                                clamp=20.0)
  lens = mask.sum(-1)
  d = np.where(mask > 0, np.where(mask > 0, logp, 0).astype(np.float64)
               - np.where(mask > 0, old, 0), 0.0)
  s = np.exp(d.sum(-1) / np.maximum(lens, 1))
  clipped = ((adv > 0) & (s > 1 + 4e-4)) | ((adv < 0) & (s < 1 - 3e-4))
  expected = -(adv * s * ~clipped)[:, None] * mask / np.maximum(lens, 1)[:, None] / (lens > 0).sum()
  np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-5, atol=1e-8)
  np.testing.assert_array_equal(clipped, [False, True, True, False, False])
  np.testing.assert_allclose(float(metrics["seq_clip_frac"]), clipped[lens > 0].mean(), atol=1e-6)


def test_gspo_token_equals_differentiating_through_the_mean():
  """TRL differentiates s_i = exp(mean_t d) directly; with advantages constant in a sequence the
  stop-gradient construction gives the same value and gradient under every aggregation mode."""
  logp, old, _, mask, _ = make_batch(5, spread=0.05)
  adv = np.random.default_rng(5).normal(size=4).astype(np.float32)

  def through_mean(lp, mode):
    m = jnp.asarray(mask)
    d = jnp.where(m > 0, lp - jnp.where(m > 0, old, 0.0), 0.0)
    s = jnp.exp(jnp.sum(d, -1) / jnp.maximum(m.sum(-1), 1))[:, None] * jnp.ones_like(lp)
    a = jnp.asarray(adv)[:, None]
    return rljax.aggregate(jnp.maximum(-a * s, -a * jnp.clip(s, 0.9, 1.1)), m, mode)

  lp = jnp.where(mask > 0, logp, 0.0)
  # dual_clip=3 never fires here (s ≈ 1); it lets this reuse the compiled sequence-level case.
  out = _all_modes(logp, old, np.repeat(adv[:, None], 6, 1), mask, np.ones_like(logp), 0.1, 0.1,
                   3.0, level="sequence")
  refs = jax.jit(lambda x: {m: jax.value_and_grad(through_mean)(x, m) for m in MODES})(lp)
  for mode in MODES:
    ref_loss, ref_grad = refs[mode]
    loss, _, grad = out[mode]
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(ref_grad), rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------------------- dual clip, clip-higher


def test_dual_clip_facts():
  """Ye et al. (c = 3): A = -1, ρ = 5 gives loss 3 with zero gradient; ρ = 2 is plain PPO."""
  old = np.log(np.array([[0.1, 0.2]], np.float32))
  logp = np.log(np.array([[0.5, 0.4]], np.float32))  # ratios 5 and 2
  mask = np.array([[1.0, 0.0]], np.float32)
  adv = np.array([-1.0], np.float32)
  # Without the dual clip the first loss would be -A ρ = 5 (checked against NumPy elsewhere).
  for col, loss_ref, grad_ref, frac in [(0, 3.0, 0.0, 1.0), (1, 2.0, 2.0, 0.0)]:
    m = np.roll(mask, col, axis=1)
    loss, metrics, grad = _jit_vg(logp, old, adv, m, dual_clip=3.0, level="token",
                                  aggregation="token-mean", clamp=20.0)
    np.testing.assert_allclose(float(loss), loss_ref, rtol=1e-5)
    np.testing.assert_allclose(float(grad[0, col]), grad_ref, rtol=1e-5, atol=0)  # -A ρ or 0
    assert float(metrics["dual_clip_frac"]) == frac
    assert float(metrics["masked_frac"]) == frac


@pytest.mark.parametrize("bad", [1.0, 0.5, -3.0])
def test_dual_clip_must_exceed_one(bad):
  x = np.zeros((1, 2), np.float32)
  with pytest.raises(ValueError, match="dual_clip"):
    rljax.ppo_clip_loss(x, x, np.ones(1, np.float32), np.ones((1, 2)), dual_clip=bad)


def test_clip_higher_gives_asymmetric_clip_fractions():
  """DAPO ε_low = 0.2, ε_high = 0.28: ρ = 1.25 (A > 0) is inside, ρ = 0.79 (A < 0) is clipped."""
  ratio = np.array([[0.75, 0.79, 0.85, 1.0, 1.25, 1.3, 1.5, 0.5]])
  adv = np.array([[-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, -1.0, 1.0]], np.float32)
  old = np.full(ratio.shape, np.log(0.3), np.float32)
  logp = (old + np.log(ratio)).astype(np.float32)
  mask = np.ones_like(logp)
  for (el, eh), (n_low, n_high) in [((0.2, 0.28), (2, 1)), ((0.2, 0.2), (2, 2))]:
    loss, metrics, grad = _jit_vg(logp, old, adv, mask, epsilon_low=el, epsilon_high=eh,
                                  level="token", aggregation="token-mean", clamp=20.0)
    low = (adv < 0) & (ratio < 1 - el)
    high = (adv > 0) & (ratio > 1 + eh)
    assert (low.sum(), high.sum()) == (n_low, n_high)
    np.testing.assert_allclose(float(metrics["clip_frac_low"]), n_low / 8, atol=1e-7)
    np.testing.assert_allclose(float(metrics["clip_frac_high"]), n_high / 8, atol=1e-7)
    np.testing.assert_allclose(float(metrics["clip_frac"]), (n_low + n_high) / 8, atol=1e-7)
    g = np.asarray(grad)
    assert np.all(g[low | high] == 0)
    np.testing.assert_allclose(g[~(low | high)], (-adv * ratio)[~(low | high)] / 8, rtol=1e-5)


# ----------------------------------------------------------------------------- peers


def _np_verl_vanilla(logp, old, adv, m, eps=0.2, c=3.0):
  """verl compute_policy_loss_vanilla, restated: clamp ±20, dual clip always, token-mean."""
  d = np.clip(logp.astype(np.float64) - old, -20, 20)
  r = np.exp(d)
  a = adv[:, None] if adv.ndim == 1 else adv
  l1, l2 = -a * r, -a * np.clip(r, 1 - eps, 1 + eps)
  lc = np.maximum(l1, l2)
  l = np.where(a < 0, np.minimum(lc, -a * c), lc)
  return (l * m).sum() / m.sum()


def _np_trl_grpo(logp, old, adv, m, eps=0.2):
  """TRL GRPO (token level, no clamp, no dual clip), token-mean ('bnpo'/'dapo')."""
  r = np.exp(logp.astype(np.float64) - old)
  a = adv[:, None]
  l = -np.minimum(r * a, np.clip(r, 1 - eps, 1 + eps) * a)
  return (l * m).sum() / m.sum()


def test_dual_clip_3_reproduces_verl_and_trinity_vanilla_ppo():
  logp, old, _, _, _ = make_batch(6, spread=1.5, ragged=False)
  mask = np.ones_like(logp)
  old[0, 0] = logp[0, 0] - 30.0  # log-ratio beyond the ±20 clamp
  adv = np.array([-1.0, 2.0, -0.5, 1.0], np.float32)
  ours = rljax.ppo_clip_loss(logp, old, adv, mask, dual_clip=3.0, aggregation="token-mean")
  np.testing.assert_allclose(float(ours.loss), _np_verl_vanilla(logp, old, adv, mask), rtol=1e-5)
  assert float(ours.metrics["dual_clip_frac"]) > 0


def test_clamp_none_reproduces_trl_and_default_clamps_at_20():
  logp, old, _, _, _ = make_batch(7, spread=0.5, ragged=False)
  mask = np.ones_like(logp)
  old[0, 0] = logp[0, 0] - 30.0  # ratio e^30 on a negative-advantage token
  adv = np.array([-1.0, 2.0, -0.5, 1.0], np.float32)
  trl = _np_trl_grpo(logp, old, adv, mask)
  got = rljax.ppo_clip_loss(logp, old, adv, mask, clamp=None, aggregation="token-mean")
  np.testing.assert_allclose(float(got.loss), trl, rtol=1e-5)
  clamped = rljax.ppo_clip_loss(logp, old, adv, mask, aggregation="token-mean")
  ref_l, _ = np_ppo(logp, old, adv, mask, el=0.2, eh=0.2, clamp=20.0)
  np.testing.assert_allclose(float(clamped.loss), np_aggregate(ref_l, mask, "token-mean"),
                             rtol=1e-5)
  assert float(clamped.loss) < trl / 1e3
  np.testing.assert_allclose(float(clamped.metrics["log_ratio_clamped_frac"]), 1 / 24, rtol=1e-6)


def _np_verl_gspo(logp, old, adv, m, el, eh):
  """verl compute_policy_loss_gspo, restated: log-weight ≤ 10, forced seq-mean-token-mean."""
  d = logp.astype(np.float64) - old
  lens = np.maximum(m.sum(-1), 1)
  s = (d * m).sum(-1) / lens
  r = np.exp(np.minimum(s, 10.0))[:, None]
  a = adv[:, None]
  l = np.maximum(-a * r, -a * np.clip(r, 1 - el, 1 + eh))
  return ((l * m).sum(-1) / (m.sum(-1) + 1e-8)).mean()


def test_gspo_aggregation_default_matches_verl_but_is_not_forced():
  """verl's gspo ignores loss_agg_mode and always uses seq-mean-token-mean. Ours defaults to
  that mode at sequence level and honours an explicit `aggregation`."""
  logp, old, _, _, _ = make_batch(8, spread=0.002, ragged=False)
  mask = (np.arange(6)[None, :] < np.array([6, 2, 4, 1])[:, None]).astype(np.float32)
  adv = np.array([1.0, -1.0, 0.5, -2.0], np.float32)
  verl = _np_verl_gspo(logp, old, adv, mask, 3e-4, 4e-4)
  ours = rljax.ppo_clip_loss(logp, old, adv, mask, level="sequence")
  np.testing.assert_allclose(float(ours.loss), verl, rtol=1e-5)
  token_mean = rljax.ppo_clip_loss(logp, old, adv, mask, level="sequence",
                                   aggregation="token-mean")
  ref_l, _ = np_ppo(logp, old, adv, mask, el=3e-4, eh=4e-4, level="sequence")
  np.testing.assert_allclose(float(token_mean.loss), np_aggregate(ref_l, mask, "token-mean"),
                             rtol=1e-5)
  assert abs(float(token_mean.loss) - verl) > 1e-3


# ----------------------------------------------------------------------------- robustness


@jax.jit
def _robust(logp, old, adv, mask):
  configs = (dict(level="token", dual_clip=3.0, aggregation="token-mean"),
             dict(level="sequence", aggregation="seq-mean-token-mean"),
             dict(level="sequence", dual_clip=3.0, aggregation="seq-mean-token-sum"),
             dict(level="token", is_weights=jnp.full(logp.shape, 2.0),
                  aggregation="seq-mean-token-sum-norm"))
  return [_value_and_grad(logp, old, adv, mask, **kw) for kw in configs]


_EXTREME = st.sampled_from([-1e4, -30.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 30.0, 1e4])


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(
    logp=hnp.arrays(np.float32, (3, 4), elements=_EXTREME),
    old=hnp.arrays(np.float32, (3, 4), elements=_EXTREME),
    adv=hnp.arrays(np.float32, (3, 4), elements=st.sampled_from([-5.0, -1.0, 0.0, 1.0, 5.0])),
    mask=hnp.arrays(np.bool_, (3, 4)),
    filler=st.sampled_from([-np.inf, np.inf, np.nan, 1e4]))
def test_extreme_inputs_give_finite_loss_and_gradients(logp, old, adv, mask, filler):
  """Log-ratios up to ±2e4, all-masked rows (and batches), ±inf/NaN in masked slots."""
  logp, old, adv = (np.where(mask, x, filler).astype(np.float32) for x in (logp, old, adv))
  for loss, metrics, grad in _robust(logp, old, adv, mask.astype(np.float32)):
    assert np.isfinite(float(loss))
    assert np.all(np.isfinite(np.asarray(grad)))
    assert np.all(np.asarray(grad)[~mask] == 0)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    if not mask.any():
      assert float(loss) == 0.0


# ----------------------------------------------------------------------------- vmap, validation


def test_vmap_over_a_leading_axis_matches_a_loop():
  batches = [make_batch(10 + i) for i in range(3)]
  stack = [np.stack([b[k] for b in batches]) for k in range(5)]
  fn = functools.partial(rljax.ppo_clip_loss, level="sequence", dual_clip=3.0,
                         aggregation="seq-mean-token-sum")
  vmapped = jax.jit(jax.vmap(lambda lp, o, a, m, w: fn(lp, o, a, m, is_weights=w)))(*stack)
  for i, b in enumerate(batches):
    one = fn(*b[:4], is_weights=b[4])
    np.testing.assert_allclose(float(vmapped.loss[i]), float(one.loss), rtol=1e-5)
    np.testing.assert_allclose(float(vmapped.metrics["ess"][i]), float(one.metrics["ess"]),
                               rtol=1e-5)


def test_invalid_arguments_raise_value_errors_naming_them():
  x = np.zeros((2, 3), np.float32)
  a = np.ones(2, np.float32)
  with pytest.raises(ValueError, match=r"level='seq'.*\('token', 'sequence'\)"):
    rljax.ppo_clip_loss(x, x, a, x, level="seq")
  with pytest.raises(ValueError, match="aggregation='mean'"):
    rljax.ppo_clip_loss(x, x, a, x, aggregation="mean")
  with pytest.raises(ValueError, match=r"old_logp must have the same shape as logp"):
    rljax.ppo_clip_loss(x, x[:, :2], a, x)
  with pytest.raises(ValueError, match=r"advantages must have shape \[2\]"):
    rljax.ppo_clip_loss(x, x, np.ones(3, np.float32), x)
  with pytest.raises(ValueError, match=r"is_weights must have shape \[2, 3\]"):
    rljax.ppo_clip_loss(x, x, a, x, is_weights=np.ones((3, 2), np.float32))
  with pytest.raises(ValueError, match="epsilon_low"):
    rljax.ppo_clip_loss(x, x, a, x, epsilon_low=-0.1)
  with pytest.raises(ValueError, match="logp must be a floating"):
    rljax.ppo_clip_loss(x.astype(np.int32), x, a, x)
