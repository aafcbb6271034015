"""Tests of topr_loss (Tapered Off-Policy REINFORCE, arXiv 2503.14286).

Values and gradients against an independent float64 NumPy implementation; the paper's claims
(positives untouched, negatives tapered by min(π/μ, 1), the TOPR gradient at π = μ, the effective
positive fraction) against exact enumeration on the tabular policy of tests/tabular.py.
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
STATIC = ("level", "negative_bounds", "positive_bounds", "clamp", "aggregation", "max_tokens")


@functools.partial(jax.jit, static_argnames=STATIC)
def loss_and_grad(logp, behavior_logp, rewards, mask, normalizer=None, **kw):
  """The one jitted TOPR function: (loss, metrics), d loss / d logp."""
  fn = lambda lp: rljax.topr_loss(lp, behavior_logp, rewards, mask, normalizer=normalizer, **kw)
  return jax.value_and_grad(fn, has_aux=True)(logp)


# ----------------------------------------------------------------------------- NumPy reference


def np_agg_weights(m, mode):
  """d aggregate / d value per token (aggregation is linear; empty rows excluded)."""
  lens = m.sum(-1, keepdims=True)
  nonempty = max((lens > 0).sum(), 1)
  if mode == "token-mean":
    return m / max(m.sum(), 1.0)
  if mode == "seq-mean-token-sum-norm":
    return m / (m.shape[0] * m.shape[1])
  if mode == "seq-mean-token-mean":
    return m / np.maximum(lens, 1.0) / nonempty
  return m / nonempty


def np_topr(logp, blogp, rewards, m, mode, *, baseline=0.0, level="sequence-sum",
            neg=(0.0, 1.0), pos=(1.0, 1.0), clamp=20.0):
  """Loss and d loss / d logp in float64, written from the paper's definition."""
  logp, blogp, rewards, m = (np.asarray(x, np.float64) for x in (logp, blogp, rewards, m))
  valid = m > 0
  lp = np.where(valid, logp, 0.0)
  d = lp - np.where(valid, blogp, 0.0)
  cl = (lambda x: x) if clamp is None else (lambda x: np.clip(x, -clamp, clamp))
  d = cl(d)
  if level == "token":
    logw = d
  elif level == "sequence-sum":
    logw = np.repeat(cl((d * m).sum(-1))[:, None], d.shape[1], 1)
  else:
    logw = np.repeat(cl((d * m).sum(-1) / np.maximum(m.sum(-1), 1))[:, None], d.shape[1], 1)
  with np.errstate(over="ignore"):
    rho = np.exp(logw)
  adv = (rewards[:, None] if rewards.ndim == 1 else rewards) - baseline
  adv = np.broadcast_to(adv, d.shape)
  w = np.where(adv < 0, np.clip(rho, *neg), np.clip(rho, *pos))
  per_token = np.where(valid, -w * adv * lp, 0.0)
  weights = np_agg_weights(m, mode)
  return (per_token * weights).sum(), np.where(valid, -w * adv, 0.0) * weights


def make_batch(seed, b=4, t=5, empty_row=True):
  rng = np.random.default_rng(seed)
  logp = rng.uniform(-3.0, -0.05, (b, t)).astype(np.float32)
  blogp = (logp + rng.normal(0.0, 0.6, (b, t))).astype(np.float32)
  lens = rng.integers(1, t + 1, b)
  if empty_row:
    lens[-1] = 0
  mask = (np.arange(t)[None, :] < lens[:, None]).astype(np.float32)
  rewards = rng.choice([-1.0, 1.0, 0.5, -0.25], b).astype(np.float32)
  return logp, blogp, rewards, mask


# ----------------------------------------------------------------------------- values

INF = float("inf")
# name: (keyword arguments, which rewards: 'seq' [B] or 'tok' [B, T], NumPy reference keywords)
CONFIGS = {
    **{mode: (dict(aggregation=mode, baseline=0.1), "seq", dict(mode=mode, baseline=0.1))
       for mode in MODES},
    **{f"level-{lv}-{i}": (dict(level=lv, negative_bounds=neg, positive_bounds=pos), "tok",
                           dict(mode="seq-mean-token-mean", level=lv, neg=neg, pos=pos))
       for lv in rljax.RATIO_LEVELS
       for i, (neg, pos) in enumerate([((0.0, 1.0), (1.0, 1.0)), ((0.0, INF), (0.2, 3.0))])},
    "no-clamp": (dict(clamp=None), "seq", dict(mode="seq-mean-token-mean", clamp=None)),
}


@jax.jit
def evaluate_configs(logp, behavior_logp, rewards, token_rewards, mask):
  """Every configuration of CONFIGS in one compiled function: {name: (loss, d loss / d logp)}."""
  out = {}
  for name, (kw, which, _) in CONFIGS.items():
    r = rewards if which == "seq" else token_rewards
    fn = lambda lp: rljax.topr_loss(lp, behavior_logp, r, mask, **kw).loss
    out[name] = jax.value_and_grad(fn)(logp)
  return out


@functools.lru_cache(maxsize=None)
def config_results():
  logp, blogp, rewards, mask = make_batch(0)
  token_rewards = np.random.default_rng(0).normal(size=logp.shape).astype(np.float32)
  out = evaluate_configs(logp, blogp, rewards, token_rewards, mask)
  return (logp, blogp, rewards, token_rewards, mask), jax.tree.map(np.asarray, out)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_values_and_gradients_match_numpy(name):
  (logp, blogp, rewards, token_rewards, mask), results = config_results()
  _, which, ref_kw = CONFIGS[name]
  ref_loss, ref_grad = np_topr(logp, blogp, rewards if which == "seq" else token_rewards, mask,
                               **ref_kw)
  loss, grad = results[name]
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)


@jax.jit
def trinity_and_naive(logp, blogp, rewards, adv, mask):
  trinity = rljax.topr_loss(logp, blogp, adv, mask, level="token", aggregation="token-mean",
                            clamp=None).loss
  naive = lambda lp: rljax.topr_loss(lp, blogp, rewards, mask, negative_bounds=(1.0, 1.0),
                                     baseline=0.2).loss
  reinforce = lambda lp: rljax.reinforce_loss(lp, rewards - 0.2, mask,
                                              aggregation="seq-mean-token-mean").loss
  return trinity, jax.value_and_grad(naive)(logp), jax.value_and_grad(reinforce)(logp)


def test_token_level_reproduces_trinity_topr_and_unit_bounds_are_naive_reinforce():
  """Trinity-RFT: alpha = clip(exp(logp - old), 0, 1) where A <= 0, else 1; token mean; no clamp."""
  logp, blogp, rewards, mask = make_batch(2)
  adv = np.random.default_rng(2).choice([-1.0, 0.0, 0.7], logp.shape).astype(np.float32)
  m = mask.astype(np.float64)
  ratio = np.exp(logp.astype(np.float64) - blogp)
  alpha = np.where(adv <= 0, np.clip(ratio, 0, 1), 1.0)
  trinity_ref = (-alpha * adv * logp * m).sum() / (m.sum() + 1e-8)
  trinity, (naive, g_naive), (reinforce, g_reinforce) = trinity_and_naive(
      logp, blogp, rewards, adv, mask)
  np.testing.assert_allclose(float(trinity), trinity_ref, rtol=1e-5)
  np.testing.assert_allclose(float(naive), float(reinforce), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(g_naive), np.asarray(g_reinforce), rtol=1e-6, atol=1e-8)


def test_positive_examples_do_not_depend_on_the_behaviour_policy():
  logp, blogp, _, mask = make_batch(4)
  rewards = np.array([1.0, 0.5, 0.0, 2.0], np.float32)
  _, g1 = loss_and_grad(logp, blogp, rewards, mask)
  _, g2 = loss_and_grad(logp, blogp + 5.0, rewards, mask)
  _, g3 = loss_and_grad(logp, blogp - 5.0, rewards, mask)
  np.testing.assert_array_equal(np.asarray(g1), np.asarray(g2))
  np.testing.assert_array_equal(np.asarray(g1), np.asarray(g3))


@pytest.mark.parametrize("p_pos,c,expected", [
    (0.1, -0.5, 0.25), (0.1, 0.3, 0.0565), (0.1, -1.0, 1.0), (0.1, 0.0, 0.1),
    (0.5, -0.5, 0.75), (0.5, 0.3, 0.35)])
def test_effective_positive_fraction_follows_the_paper_formula(p_pos, c, expected):
  n = 20
  rewards = np.where(np.arange(n) < round(p_pos * n), 1.0, -1.0).astype(np.float32)
  logp = np.full((n, 2), -1.0, np.float32)
  (_, metrics), _ = loss_and_grad(logp, logp, rewards, np.ones((n, 2), np.float32), baseline=c)
  formula = p_pos * (1 - c) / (1 + c * (1 - 2 * p_pos))
  np.testing.assert_allclose(formula, expected, atol=1e-4)  # the paper's numbers
  np.testing.assert_allclose(float(metrics["effective_positive_frac"]), formula, rtol=1e-5)


def test_metrics():
  logp, _, _, _ = make_batch(12)
  blogp = logp.copy()
  blogp[1, 0] += np.log(4.0)  # row 1: trajectory ratio 1/4, token ratios (1/4, 1, 1, 1, 1)
  blogp[2, 0] -= np.log(4.0)  # row 2: trajectory ratio 4
  rewards = np.array([1.0, -1.0, -1.0, 1.0], np.float32)
  mask = np.ones_like(logp)
  mask[3] = 0.0  # an empty row: excluded from ESS and from the positive share
  (_, mt), _ = loss_and_grad(logp, blogp, rewards, mask)
  np.testing.assert_allclose(float(mt["weight_mean"]), (5 + 5 * 0.25 + 5) / 15, rtol=1e-6)
  np.testing.assert_allclose(float(mt["negative_frac"]), 10 / 15, rtol=1e-6)
  np.testing.assert_allclose(float(mt["capped_frac"]), 5 / 15, rtol=1e-6)
  assert float(mt["masked_frac"]) == 0.0
  np.testing.assert_allclose(float(mt["ratio_max"]), 4.0, rtol=1e-5)
  np.testing.assert_allclose(float(mt["ratio_min"]), 0.25, rtol=1e-5)
  np.testing.assert_allclose(float(mt["effective_positive_frac"]), 1 / 3, rtol=1e-6)
  w = np.array([1.0, 0.25, 4.0])
  np.testing.assert_allclose(float(mt["ess"]), w.sum() ** 2 / (3 * (w ** 2).sum()), rtol=1e-5)


# ----------------------------------------------------------------------------- exact gradients

SEQS = jnp.asarray(tabular.all_sequences(3, 3))
true_gradient = jax.jit(tabular.true_gradient)


@jax.jit
def expected_topr_gradient(theta, theta_mu, rewards, baseline):
  """Σ_y μ(y) ∇ loss(y): the exact expected TOPR loss gradient with data from μ."""
  mu_logp = tabular.token_logp(theta_mu, SEQS)
  mu = tabular.sequence_probs(theta_mu, SEQS)

  def loss_fn(th, i):
    lp = tabular.token_logp(th, SEQS[i][None])
    return rljax.topr_loss(lp, mu_logp[i][None], rewards[i][None], jnp.ones((1, 3)),
                           baseline=baseline, aggregation="seq-mean-token-sum").loss

  return tabular.expected_per_sequence_gradient(loss_fn, theta, SEQS, mu)


sequence_probs = jax.jit(tabular.sequence_probs)


@jax.jit
def tapered_objective_gradient(theta, tapered, adv, mu):
  def objective(th):
    logpi = jnp.sum(tabular.token_logp(th, SEQS), -1)
    return jnp.sum(tapered * adv * jnp.exp(logpi) + (1 - tapered) * mu * adv * logpi)
  return jax.grad(objective)(theta)


def paper_gradient(theta, theta_mu, rewards, baseline):
  """The paper's ∇J_TOPR, written as ∇F with the partition of trajectories fixed at θ:
  positives μ A log π, negatives with π < μ A π (tapered IS), the other negatives μ A log π."""
  pi = np.asarray(sequence_probs(theta, SEQS), np.float64)
  mu = np.asarray(sequence_probs(theta_mu, SEQS), np.float64)
  adv = np.asarray(rewards, np.float64) - baseline
  tapered = ((adv < 0) & (pi < mu)).astype(np.float32)
  grad = tapered_objective_gradient(theta, tapered, adv.astype(np.float32),
                                    mu.astype(np.float32))
  return grad, tapered


def test_gradient_at_pi_equal_mu_is_the_true_policy_gradient():
  theta = tabular.init_theta(jax.random.PRNGKey(0), 3, 3)
  rewards = jnp.asarray(np.random.default_rng(0).choice([-1.0, 1.0], 27), jnp.float32)
  for c in (0.0, 0.4):
    g = expected_topr_gradient(theta, theta, rewards, c)
    true = true_gradient(theta, SEQS, rewards)
    np.testing.assert_allclose(np.asarray(g), -np.asarray(true), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("seed", [1, 2])
def test_expected_gradient_off_policy_is_the_papers_tapered_gradient(seed):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  theta = tabular.init_theta(k1, 3, 3)
  theta_mu = tabular.init_theta(k2, 3, 3)
  rewards = jnp.asarray(np.random.default_rng(seed).choice([-1.0, 1.0, 0.5], 27), jnp.float32)
  g = expected_topr_gradient(theta, theta_mu, rewards, 0.0)
  ref, tapered = paper_gradient(theta, theta_mu, rewards, 0.0)
  assert 0 < tapered.sum() < 27  # both kinds of negatives are present
  np.testing.assert_allclose(np.asarray(g), -np.asarray(ref), rtol=1e-4, atol=1e-6)


def test_negative_push_vanishes_as_its_probability_goes_to_zero():
  """Bandit (T = 1): a negative arm whose probability fell to ~e^-30 gets no TOPR gradient, while
  naive off-policy REINFORCE keeps pushing with weight μ."""
  seqs = jnp.asarray(tabular.all_sequences(3, 1))
  theta = jnp.zeros((1, 4, 3)).at[0, 3, 1].set(-30.0)
  mu_logp = jnp.log(jnp.full((3, 1), 1.0 / 3.0))
  rewards = jnp.array([1.0, -1.0, 1.0])

  @jax.jit
  def grad_norms(theta):
    norms = []
    for bounds, clamp in (((0.0, 1.0), None), ((0.0, 1.0), 20.0), ((1.0, 1.0), 20.0)):
      fn = lambda th: rljax.topr_loss(tabular.token_logp(th, seqs[1:2]), mu_logp[1:2],
                                      rewards[1:2], jnp.ones((1, 1)),
                                      negative_bounds=bounds, clamp=clamp).loss
      norms.append(jnp.linalg.norm(jax.grad(fn)(theta)))
    return norms

  tapered, tapered_clamped, naive = (float(x) for x in grad_norms(theta))
  assert tapered < 1e-10
  # The default ±20 log-ratio clamp floors the weight at e^-20: still a vanishing push.
  assert tapered_clamped < 1e-8
  assert naive > 0.5


# ----------------------------------------------------------------------------- robustness


@hypothesis.settings(max_examples=30, deadline=None, derandomize=True)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1.0, 1e2, 1e4]),
                  empty=st.booleans())
def test_extreme_inputs_give_finite_loss_and_gradients(seed, scale, empty):
  rng = np.random.default_rng(seed)
  logp = -rng.uniform(0, scale, (4, 5)).astype(np.float32)
  blogp = -rng.uniform(0, scale, (4, 5)).astype(np.float32)
  mask = (rng.uniform(size=(4, 5)) < 0.6).astype(np.float32)
  if empty:
    mask[rng.integers(4)] = 0.0
  logp[mask == 0] = -np.inf  # masked slots may hold anything
  blogp[mask == 0] = 1e4
  rewards = rng.normal(size=4).astype(np.float32)
  (loss, metrics), grad = loss_and_grad(logp, blogp, rewards, mask)
  assert np.isfinite(float(loss))
  assert np.all(np.isfinite(np.asarray(grad)))
  assert np.all(np.asarray(grad)[mask == 0] == 0.0)
  assert all(np.isfinite(float(v)) for v in metrics.values())


def test_all_masked_batch_is_zero():
  logp, blogp, rewards, _ = make_batch(5)
  (loss, _), grad = loss_and_grad(logp, blogp, rewards, np.zeros_like(logp))
  assert float(loss) == 0.0 and not np.any(np.asarray(grad))


def test_validation_errors():
  logp, blogp, rewards, mask = make_batch(6)
  with pytest.raises(ValueError, match="rewards"):
    rljax.topr_loss(logp, blogp, rewards[:3], mask)
  with pytest.raises(ValueError, match="level"):
    rljax.topr_loss(logp, blogp, rewards, mask, level="seq")
  with pytest.raises(ValueError, match="negative_bounds"):
    rljax.topr_loss(logp, blogp, rewards, mask, negative_bounds=(1.0, 0.0))
  with pytest.raises(ValueError, match="behavior_logp"):
    rljax.topr_loss(logp, blogp[:, :3], rewards, mask)
  with pytest.raises(ValueError, match="aggregation"):
    rljax.topr_loss(logp, blogp, rewards, mask, aggregation="mean")


def test_vmap_matches_a_loop():
  batches = [make_batch(s) for s in (7, 8, 9)]
  stacked = [np.stack(x) for x in zip(*batches)]
  fn = jax.jit(jax.vmap(lambda *a: rljax.topr_loss(*a).loss))
  np.testing.assert_allclose(np.asarray(fn(*stacked)),
                             [float(loss_and_grad(*b)[0][0]) for b in batches], rtol=1e-6)


@jax.jit
def all_modes(logp, behavior_logp, rewards, mask, normalizers):
  """{mode: (loss, grad)} with an external normalizer per mode, in one compiled function."""
  out = {}
  for mode, norm in zip(MODES, normalizers):
    fn = lambda lp: rljax.topr_loss(lp, behavior_logp, rewards, mask, aggregation=mode,
                                    normalizer=norm).loss
    out[mode] = jax.value_and_grad(fn)(logp)
  return out


def test_micro_batches_with_external_normalizer_sum_to_the_full_batch():
  logp, blogp, rewards, mask = make_batch(10, b=8, t=4)
  norms = [rljax.aggregation_normalizer(mask, mode) for mode in MODES]
  full = all_modes(logp, blogp, rewards, mask, norms)
  parts = [all_modes(logp[s], blogp[s], rewards[s], mask[s], norms)
           for s in np.split(np.arange(8), 4)]
  for mode in MODES:
    np.testing.assert_allclose(sum(float(p[mode][0]) for p in parts), float(full[mode][0]),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.concatenate([np.asarray(p[mode][1]) for p in parts]),
                               np.asarray(full[mode][1]), rtol=1e-6, atol=1e-8)


def test_sharded_batch_gives_the_same_value_and_gradient():
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices")
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  row = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  args = make_batch(10, b=8, t=4)
  norms = [rljax.aggregation_normalizer(args[-1], mode) for mode in MODES]
  one = all_modes(*args, norms)
  eight = all_modes(*(jax.device_put(a, row) for a in args), norms)
  for mode in MODES:
    np.testing.assert_allclose(float(eight[mode][0]), float(one[mode][0]), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(eight[mode][1]), np.asarray(one[mode][1]), rtol=1e-6,
                               atol=1e-8)
