"""Tests of the group-relative REINFORCE family (arXiv 2509.24203): rec_loss, opmd_loss,
asymre_loss and their advantages.

Values and gradients against independent float64 NumPy implementations written from the paper's
tables; the paper's claims: REC *masks* tokens outside its regions (zero gradient, not a clipped
constant), the ring table, OneSide-IS has PPO-clip's gradient, OPMD's first step is group
REINFORCE and 1/(2 tau) times the pairwise-consistency gradient (exact tabular), AsymRE's shift is
REINFORCE plus delta * (-log pi) and moves the off-policy fixed point to pi ∝ mu * w (exact
bandit enumeration), or makes it collapse when the baseline is raised instead.
"""

import functools

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rljax
from tests import tabular

MODES = rljax.AGGREGATION_MODES


def make_batch(seed, b=4, t=5, empty_row=True, spread=0.4):
  rng = np.random.default_rng(seed)
  logp = rng.uniform(-3.0, -0.05, (b, t)).astype(np.float32)
  old = (logp + rng.normal(0.0, spread, (b, t))).astype(np.float32)
  lens = rng.integers(1, t + 1, b)
  if empty_row:
    lens[-1] = 0
  mask = (np.arange(t)[None, :] < lens[:, None]).astype(np.float32)
  rewards = rng.choice([0.0, 1.0, 0.5], b).astype(np.float32)
  return logp, old, rewards, mask


def np_mode_factor(m, mode):
  """d aggregate / d (row's token-sum) per row, for losses given as row sums."""
  lens = m.sum(-1)
  nonempty = max((lens > 0).sum(), 1)
  if mode == "token-mean":
    return np.full(len(m), 1.0 / max(m.sum(), 1.0))
  if mode == "seq-mean-token-sum-norm":
    return np.full(len(m), 1.0 / (m.shape[0] * m.shape[1]))
  if mode == "seq-mean-token-mean":
    return np.where(lens > 0, 1.0 / np.maximum(lens, 1.0), 0.0) / nonempty
  return np.where(lens > 0, 1.0, 0.0) / nonempty


# ----------------------------------------------------------------------------- advantages


def np_logavgexp(x, tau):
  mx = x.max()
  return tau * (mx / tau + np.log(np.mean(np.exp((x - mx) / tau))))


@functools.partial(jax.jit, static_argnames=("group_size",))
def advantage_variants(rewards, group_size):
  out = {("asym", 0.0): rljax.asymre_advantages(rewards, group_size, shift=0.3)}
  for tau in (0.5, 2.0):
    out[("mean", tau)] = rljax.opmd_advantages(rewards, group_size, tau=tau)
    out[("soft", tau)] = rljax.opmd_advantages(rewards, group_size, tau=tau,
                                               baseline="logavgexp")
  return out


@pytest.mark.parametrize("group_size", [1, 2, 4])
def test_advantage_helpers_match_numpy(group_size):
  rewards = np.array([1.0, 0.0, 0.5, 0.5, 2.0, -1.0, 0.3, 0.3], np.float32)
  groups = rewards.astype(np.float64).reshape(-1, group_size)
  out = advantage_variants(rewards, group_size)
  ref_mean = (groups - groups.mean(1, keepdims=True)).reshape(-1)
  flat = np.repeat(groups.max(1) == groups.min(1), group_size)
  for tau in (0.5, 2.0):
    ref_soft = np.concatenate([g - np_logavgexp(g, tau) for g in groups])
    ref_soft = np.where(flat, 0.0, ref_soft)  # zero-variance groups (and singletons) give 0
    np.testing.assert_allclose(np.asarray(out[("mean", tau)]), ref_mean, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out[("soft", tau)]), ref_soft, rtol=1e-5, atol=1e-6)
    # The soft-max baseline lies between the group mean and the group max.
    b = (rewards - np.asarray(out[("soft", tau)])).reshape(-1, group_size)
    assert np.all(b >= groups.mean(1, keepdims=True) - 1e-5)
    assert np.all(b <= groups.max(1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(np.asarray(out[("asym", 0.0)]), ref_mean + 0.3, atol=1e-6)


# ----------------------------------------------------------------------------- REC


def np_rec(logp, old, adv, m, variant, el=0.2, eh=0.2, rel=0.6, reh=2.0, clamp=20.0):
  """REC per the paper's table: loss (token-mean) and d loss / d logp, float64."""
  logp, old, adv, m = (np.asarray(x, np.float64) for x in (logp, old, adv, m))
  valid = m > 0
  lp = np.where(valid, logp, 0.0)
  rho = np.exp(np.clip(lp - np.where(valid, old, 0.0), -clamp, clamp))
  adv = np.where(valid, np.broadcast_to(adv[:, None] if adv.ndim == 1 else adv, lp.shape), 0.0)
  clip_mode, weight = variant.rsplit("-", 1)
  inside = (1 - el <= rho) & (rho <= 1 + eh)
  keep = {
      "none": np.ones_like(valid),
      "oneside": ((adv >= 0) & (rho <= 1 + eh)) | ((adv <= 0) & (rho >= 1 - el)),
      "twoside": inside,
      "ring": inside | ((adv >= 0) & (rho <= 1 - rel)) | ((adv <= 0) & (rho >= 1 + reh)),
  }[clip_mode]
  w = rho if weight == "is" else np.ones_like(rho)
  n = max(m.sum(), 1.0)
  live = valid & keep
  return np.where(live, -w * adv * lp, 0.0).sum() / n, np.where(live, -w * adv, 0.0) / n


@jax.jit
def rec_all_variants(logp, old, adv, mask):
  """{variant: (loss, grad)} for every REC variant in one compiled function."""
  out = {}
  for variant in rljax.REC_VARIANTS:
    fn = lambda lp: rljax.rec_loss(lp, old, adv, mask, variant=variant).loss
    out[variant] = jax.value_and_grad(fn)(logp)
  return out


@functools.lru_cache(maxsize=None)
def rec_results():
  logp, old, _, mask = make_batch(0, spread=1.2)  # ratios on every side of every region
  adv = np.random.default_rng(0).normal(size=logp.shape).astype(np.float32)
  return (logp, old, adv, mask), jax.tree.map(np.asarray, rec_all_variants(logp, old, adv, mask))


@pytest.mark.parametrize("variant", rljax.REC_VARIANTS)
def test_rec_values_and_gradients_match_numpy(variant):
  args, results = rec_results()
  ref_loss, ref_grad = np_rec(*args, variant)
  loss, grad = results[variant]
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)


@functools.partial(jax.jit, static_argnames=("variant", "aggregation"))
def rec_loss_and_grad(logp, old, adv, mask, variant="oneside-nois", ring=(0.6, 2.0),
                      aggregation="token-mean", normalizer=None):
  fn = lambda lp: rljax.rec_loss(lp, old, adv, mask, variant=variant, ring_epsilon_low=ring[0],
                                 ring_epsilon_high=ring[1], aggregation=aggregation,
                                 normalizer=normalizer)
  return jax.value_and_grad(fn, has_aux=True)(logp)


def kept(ratios, adv, variant, ring=(0.6, 2.0)):
  """Which tokens of a one-row batch with these ratios have a nonzero gradient."""
  ratios = np.asarray(ratios, np.float32)
  logp = np.full((1, len(ratios)), -1.0, np.float32)
  old = logp - np.log(ratios)[None]
  _, grad = rec_loss_and_grad(logp, old, np.full((1, len(ratios)), adv, np.float32),
                              np.ones_like(logp), variant, ring)
  return (np.asarray(grad)[0] != 0).tolist()


def test_ring_mask_table_and_masking_not_clipping():
  """The paper's ring with (0.2, 0.2, 0.6, 2.0): A > 0 kept on [0, 0.4] ∪ [0.8, 1.2], A < 0 kept
  on [0.8, 1.2] ∪ [3, ∞); everything else has exactly zero gradient."""
  ratios = [0.3, 0.5, 0.9, 1.1, 1.5, 2.5, 3.5]
  assert kept(ratios, 1.0, "ring-nois") == [True, False, True, True, False, False, False]
  assert kept(ratios, -1.0, "ring-nois") == [False, False, True, True, False, False, True]
  # Trinity-RFT's constructor default ring (0.4, 0.4) keeps A > 0 at ratio 0.5: a different ring.
  assert kept(ratios, 1.0, "ring-nois", ring=(0.4, 0.4))[1]
  # A kept token's gradient is the full -w * A (masking), not a clipped constant.
  logp = np.full((1, 2), -1.0, np.float32)
  old = logp - np.log(np.array([[0.9, 1.5]], np.float32))
  _, grad = rec_loss_and_grad(logp, old, np.ones((1, 2), np.float32), np.ones_like(logp),
                              "twoside-is")
  np.testing.assert_allclose(np.asarray(grad), [[-0.9 / 2, 0.0]], rtol=1e-6)


def test_oneside_is_has_the_ppo_clip_gradient():
  args, results = rec_results()
  logp, old, adv, mask = (np.asarray(a, np.float64) for a in args)
  valid = mask > 0
  rho = np.exp(np.where(valid, logp - old, 0.0))
  unclipped, clipped = -adv * rho, -adv * np.clip(rho, 0.8, 1.2)
  ppo_grad = np.where(valid & (unclipped >= clipped), -adv * rho, 0.0) / mask.sum()
  np.testing.assert_allclose(results["oneside-is"][1], ppo_grad, rtol=1e-5, atol=1e-7)
  # and OneSide-NoIS is the same mask with weight 1.
  nois_grad = np.where(valid & (unclipped >= clipped), -adv, 0.0) / mask.sum()
  np.testing.assert_allclose(results["oneside-nois"][1], nois_grad, rtol=1e-5, atol=1e-7)


def test_rec_metrics():
  logp = np.full((1, 4), -1.0, np.float32)
  old = logp - np.log(np.array([[0.5, 1.0, 1.5, 1.0]], np.float32))
  adv = np.array([[-1.0, 1.0, 1.0, 0.0]], np.float32)
  (_, mt), _ = rec_loss_and_grad(logp, old, adv, np.ones_like(logp))
  assert float(mt["clip_frac_low"]) == 0.25 and float(mt["clip_frac_high"]) == 0.25
  assert float(mt["clip_frac"]) == 0.5 and float(mt["masked_frac"]) == 0.5
  np.testing.assert_allclose(float(mt["ratio_max"]), 1.5, rtol=1e-6)


# ----------------------------------------------------------------------------- OPMD


def np_opmd(logp, old, rewards, m, group_size, tau, baseline, level, mode):
  logp, old, rewards, m = (np.asarray(x, np.float64) for x in (logp, old, rewards, m))
  valid = m > 0
  groups = rewards.reshape(-1, group_size)
  if baseline == "mean":
    b = groups.mean(1, keepdims=True)
  else:
    b = np.array([[np_logavgexp(g, tau)] for g in groups])
  adv = np.where(groups.max(1, keepdims=True) == groups.min(1, keepdims=True), 0.0,
                 groups - b).reshape(-1)[:, None]
  lp = np.where(valid, logp, 0.0)
  d = lp - np.where(valid, old, 0.0)
  if level == "sequence":  # row_i = -A_i log pi(y_i) + tau/2 D_i^2
    big_d = (d * m).sum(-1, keepdims=True)
    rows = (-adv * lp * m).sum(-1) + 0.5 * tau * big_d[:, 0] ** 2
    d_rows = m * (-adv + tau * big_d)
  else:  # row_i = sum_t -A_i lp_t + tau/2 d_t^2
    rows = (m * (-adv * lp + 0.5 * tau * d ** 2)).sum(-1)
    d_rows = m * (-adv + tau * d)
  factor = np_mode_factor(m, mode)
  return (rows * factor).sum(), d_rows * factor[:, None]


OPMD_CONFIGS = [(lv, b, mode) for lv in rljax.OPMD_LEVELS for b in rljax.OPMD_BASELINES
                for mode in ("seq-mean-token-sum", "token-mean", "seq-mean-token-mean")]


@jax.jit
def opmd_all_configs(logp, old, rewards, mask, tau):
  out = {}
  for lv, b, mode in OPMD_CONFIGS:
    fn = lambda lp: rljax.opmd_loss(lp, old, rewards, mask, 2, tau=tau, baseline=b, level=lv,
                                    aggregation=mode).loss
    out[(lv, b, mode)] = jax.value_and_grad(fn)(logp)
  return out


@pytest.mark.parametrize("tau", [0.2, 1.5])
def test_opmd_values_and_gradients_match_numpy(tau):
  logp, old, rewards, mask = make_batch(1)
  results = opmd_all_configs(logp, old, rewards, mask, tau)
  for cfg in OPMD_CONFIGS:
    lv, b, mode = cfg
    ref_loss, ref_grad = np_opmd(logp, old, rewards, mask, 2, tau, baseline=b, level=lv, mode=mode)
    loss, grad = results[cfg]
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5, atol=1e-6, err_msg=str(cfg))
    np.testing.assert_allclose(np.asarray(grad), ref_grad, rtol=1e-5, atol=1e-6,
                               err_msg=str(cfg))


def test_opmd_token_level_reproduces_trinity_rec_k2():
  """Trinity-RFT REC regularizer='k2', coef 0.1: token mean of -A logp + 0.1 (logp - old)^2,
  A = r - group mean (std_normalize off)."""
  logp, old, rewards, mask = make_batch(2)
  results = opmd_all_configs(logp, old, rewards, mask, 0.2)
  m = mask.astype(np.float64)
  g = rewards.astype(np.float64).reshape(-1, 2)
  adv = (g - g.mean(1, keepdims=True)).reshape(-1)[:, None]
  per = -adv * logp + 0.1 * (logp.astype(np.float64) - old) ** 2
  trinity = (per * m).sum() / (m.sum() + 1e-8)
  np.testing.assert_allclose(float(results[("token", "mean", "token-mean")][0]), trinity,
                             rtol=1e-5)


SEQS = jnp.asarray(tabular.all_sequences(3, 3))


@jax.jit
def opmd_vs_pairwise(theta, idx, rewards, tau):
  """At theta = theta_t: grad of OPMD and of (1/K^2) sum_{i<j} (a_i - a_j)^2,
  a_i = r_i - tau (log pi(y_i) - log pi_t(y_i))."""
  old = jax.lax.stop_gradient(tabular.token_logp(theta, SEQS[idx]))
  k = idx.shape[0]

  def opmd(th):
    return rljax.opmd_loss(tabular.token_logp(th, SEQS[idx]), old, rewards, jnp.ones((k, 3)), k,
                           tau=tau).loss

  def pairwise(th):
    a = rewards - tau * jnp.sum(tabular.token_logp(th, SEQS[idx]) - old, -1)
    diff = a[:, None] - a[None, :]
    return jnp.sum(jnp.triu(diff ** 2, 1)) / k ** 2

  def group_reinforce(th):
    lp = jnp.sum(tabular.token_logp(th, SEQS[idx]), -1)
    return -jnp.mean((rewards - jnp.mean(rewards)) * lp)

  return jax.grad(opmd)(theta), jax.grad(pairwise)(theta), jax.grad(group_reinforce)(theta)


@pytest.mark.parametrize("tau", [0.3, 2.0])
def test_opmd_first_step_is_group_reinforce_and_the_pairwise_consistency_gradient(tau):
  theta = tabular.init_theta(jax.random.PRNGKey(5), 3, 3)
  idx = jnp.array([0, 7, 13, 26, 5])
  rewards = jnp.array([1.0, 0.0, 0.5, 1.0, 0.2])
  g_opmd, g_pair, g_reinforce = opmd_vs_pairwise(theta, idx, rewards, tau)
  np.testing.assert_allclose(np.asarray(g_opmd), np.asarray(g_reinforce), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(g_pair), 2 * tau * np.asarray(g_opmd), rtol=1e-4,
                             atol=1e-7)


# ----------------------------------------------------------------------------- AsymRE


@jax.jit
def asymre_and_reference(logp, rewards, mask, shift):
  asym = lambda lp: rljax.asymre_loss(lp, rewards, mask, 2, shift=shift).loss
  ref = lambda lp: (rljax.reinforce_loss(lp, rljax.group_advantages(rewards, 2, scale="none"),
                                         mask).loss
                    + shift * rljax.aggregate(-lp, mask, "token-mean"))
  return jax.value_and_grad(asym)(logp), jax.value_and_grad(ref)(logp)


@pytest.mark.parametrize("shift", [0.1, -0.3])
def test_asymre_is_reinforce_plus_shift_times_negative_log_likelihood(shift):
  logp, _, rewards, mask = make_batch(3)
  (loss, grad), (ref, ref_grad) = asymre_and_reference(logp, rewards, mask, shift)
  np.testing.assert_allclose(float(loss), float(ref), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(grad), np.asarray(ref_grad), rtol=1e-5, atol=1e-8)


BANDIT = jnp.asarray(tabular.all_sequences(3, 1))
MU = jnp.array([0.5, 0.3, 0.2])
R3 = jnp.array([1.0, 0.5, 0.0])


@jax.jit
def asymre_descent(shift):
  """Gradient descent on the exact expected AsymRE loss, groups of 2 drawn i.i.d. from MU."""
  def group_loss(th, idx):
    return rljax.asymre_loss(tabular.token_logp(th, BANDIT[idx]), R3[idx], jnp.ones((2, 1)), 2,
                             shift=shift).loss

  grad = lambda th: tabular.expected_group_gradient(group_loss, th, BANDIT, MU, 2)
  theta = jax.lax.fori_loop(0, 2000, lambda _, th: th - 1.0 * grad(th), jnp.zeros((1, 4, 3)))
  return jax.nn.softmax(theta[0, 3]), grad(theta)


def test_asymre_shift_sets_the_off_policy_fixed_point():
  """With groups of G from a fixed mu and the group-mean baseline lowered by delta, the expected
  update is sum_y mu(y) w(y) grad log pi(y), w = (G-1)/G (r - E_mu r) + delta: its fixed point is
  pi ∝ mu * w when every w > 0. Raising the baseline instead (delta < 0) makes some w negative,
  and the policy collapses onto the remaining arms."""
  mu, r = np.asarray(MU, np.float64), np.asarray(R3, np.float64)
  w = 0.5 * (r - (mu * r).sum()) + 0.5
  assert np.all(w > 0)
  pi, grad = asymre_descent(0.5)
  np.testing.assert_allclose(np.asarray(pi), mu * w / (mu * w).sum(), atol=1e-4)
  np.testing.assert_allclose(np.asarray(grad), 0.0, atol=1e-6)
  pi_neg, _ = asymre_descent(-0.1)
  assert float(pi_neg[0]) > 0.99  # only arm 0 keeps a positive weight


# ----------------------------------------------------------------------------- robustness


@functools.partial(jax.jit, static_argnames=("group_size",))
def defaults_loss_and_grad(logp, old, rewards, mask, group_size=2):
  """Default configurations of the three losses, with metrics."""
  adv = rljax.group_advantages(rewards, group_size, scale="none")
  rec = jax.value_and_grad(lambda lp: rljax.rec_loss(lp, old, adv, mask), has_aux=True)(logp)
  opmd = jax.value_and_grad(
      lambda lp: rljax.opmd_loss(lp, old, rewards, mask, group_size), has_aux=True)(logp)
  asym = jax.value_and_grad(
      lambda lp: rljax.asymre_loss(lp, rewards, mask, group_size), has_aux=True)(logp)
  return {"rec": rec, "opmd": opmd, "asymre": asym}


@hypothesis.settings(max_examples=30, deadline=None, derandomize=True)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1.0, 1e2, 1e4]),
                  empty=st.booleans(), flat=st.booleans())
def test_extreme_inputs_give_finite_loss_and_gradients(seed, scale, empty, flat):
  rng = np.random.default_rng(seed)
  logp = -rng.uniform(0, scale, (4, 5)).astype(np.float32)
  old = -rng.uniform(0, scale, (4, 5)).astype(np.float32)
  mask = (rng.uniform(size=(4, 5)) < 0.6).astype(np.float32)
  if empty:
    mask[rng.integers(4)] = 0.0
  logp[mask == 0] = -np.inf
  old[mask == 0] = 1e4
  rewards = (np.ones(4) if flat else rng.normal(size=4)).astype(np.float32)
  for name, ((loss, metrics), grad) in defaults_loss_and_grad(logp, old, rewards, mask).items():
    assert np.isfinite(float(loss)), name
    assert np.all(np.isfinite(np.asarray(grad))), name
    assert np.all(np.asarray(grad)[mask == 0] == 0.0), name
    assert all(np.isfinite(float(v)) for v in metrics.values()), name


def test_group_of_one_and_zero_variance_groups():
  logp, old, _, mask = make_batch(4)
  out = defaults_loss_and_grad(logp, old, np.ones(4, np.float32), mask, group_size=1)
  assert float(out["opmd"][0][1]["advantage_mean"]) == 0.0  # singletons: zero advantage
  np.testing.assert_allclose(float(out["asymre"][0][1]["advantage_mean"]), 0.1, rtol=1e-6)
  for name, ((loss, _), grad) in out.items():
    assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(grad))), name
  # A zero-variance group: REC and the REINFORCE part of OPMD have zero gradient at old = logp.
  out = defaults_loss_and_grad(logp, logp, np.full(4, 0.7, np.float32), mask)
  for name in ("rec", "opmd"):
    assert not np.any(np.asarray(out[name][1])), name


def test_validation_errors():
  logp, old, rewards, mask = make_batch(5)
  with pytest.raises(ValueError, match="variant"):
    rljax.rec_loss(logp, old, rewards, mask, variant="REC-OneSide-NoIS")
  with pytest.raises(ValueError, match="ring_epsilon_low"):
    rljax.rec_loss(logp, old, rewards, mask, variant="ring-nois", ring_epsilon_low=0.1)
  with pytest.raises(ValueError, match="multiple of group_size"):
    rljax.opmd_loss(logp, old, rewards, mask, 3)
  with pytest.raises(ValueError, match="baseline"):
    rljax.opmd_loss(logp, old, rewards, mask, 2, baseline="max")
  with pytest.raises(ValueError, match="level"):
    rljax.opmd_loss(logp, old, rewards, mask, 2, level="batch")
  with pytest.raises(ValueError, match="rewards"):
    rljax.asymre_loss(logp, rewards[:2], mask, 2)
  with pytest.raises(ValueError, match="advantages"):
    rljax.rec_loss(logp, old, rewards[:3], mask)
  with pytest.raises(ValueError, match="tau"):
    rljax.opmd_advantages(rewards, 2, tau=0.0, baseline="logavgexp")


def test_vmap_matches_a_loop():
  batches = [make_batch(s) for s in (6, 7, 8)]
  stacked = [np.stack(x) for x in zip(*batches)]
  fn = jax.jit(jax.vmap(lambda *a: {k: v[0][0] for k, v in defaults_loss_and_grad(*a).items()}))
  out = fn(*stacked)
  for i, b in enumerate(batches):
    ref = defaults_loss_and_grad(*b)
    for k in out:
      # Under vmap the CPU's select-free row sums (aggregation.masked_row_sums) become the select
      # form, which sums in another order: float32 rounding, 1.8e-6 relative on AsymRE.
      np.testing.assert_allclose(float(out[k][i]), float(ref[k][0][0]), rtol=1e-5, err_msg=k)


@jax.jit
def micro_batch_losses(logp, old, rewards, mask, norm_tok, norm_seq):
  adv = rljax.group_advantages(rewards, 2, scale="none")
  rec = lambda lp: rljax.rec_loss(lp, old, adv, mask, normalizer=norm_tok).loss
  opmd = lambda lp: rljax.opmd_loss(lp, old, rewards, mask, 2, normalizer=norm_seq).loss
  asym = lambda lp: rljax.asymre_loss(lp, rewards, mask, 2, normalizer=norm_tok).loss
  return [jax.value_and_grad(f)(logp) for f in (rec, opmd, asym)]


def test_micro_batches_and_sharding():
  logp, old, rewards, mask = make_batch(9, b=8, t=4)
  norms = (rljax.aggregation_normalizer(mask, "token-mean"),
           rljax.aggregation_normalizer(mask, "seq-mean-token-sum"))
  full = micro_batch_losses(logp, old, rewards, mask, *norms)
  parts = [micro_batch_losses(logp[s], old[s], rewards[s], mask[s], *norms)
           for s in np.split(np.arange(8), 4)]
  for k in range(3):
    np.testing.assert_allclose(sum(float(p[k][0]) for p in parts), float(full[k][0]),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.concatenate([np.asarray(p[k][1]) for p in parts]),
                               np.asarray(full[k][1]), rtol=1e-6, atol=1e-8)
  if jax.device_count() >= 8:
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    row = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    sharded = micro_batch_losses(*(jax.device_put(a, row) for a in (logp, old, rewards, mask)),
                                 *norms)
    for k in range(3):
      np.testing.assert_allclose(float(sharded[k][0]), float(full[k][0]), rtol=1e-6)
      np.testing.assert_allclose(np.asarray(sharded[k][1]), np.asarray(full[k][1]), rtol=1e-6,
                                 atol=1e-8)
