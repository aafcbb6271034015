"""Tests of copg_loss (Contrastive Policy Gradient, arXiv 2406.19185).

Values and gradients against an explicit all-pairs NumPy implementation; the paper's claims
against exact enumeration on tests/tabular.py: the gradient is zero at pi* ∝ pi_ref exp(R/beta)
(for any sampling policy, all pairs enumerated), on-policy it is minus the gradient of the
KL-regularised objective, the stop-gradient product form has the same gradient, gradient descent
from off-policy data reaches pi*, and the IPO special case.
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


@functools.partial(jax.jit, static_argnames=("group_size",))
def loss_and_grad(logp, ref_logp, rewards, mask, group_size, beta, normalizer=None):
  """The one jitted CoPG function (beta is traced, so sweeping it does not recompile)."""
  fn = lambda lp: rljax.copg_loss(lp, ref_logp, rewards, mask, group_size, beta=beta,
                                  normalizer=normalizer)
  return jax.value_and_grad(fn, has_aux=True)(logp)


def np_copg(logp, ref_logp, rewards, m, group_size, beta):
  """Mean over groups of the mean over all pairs i < j of (a_i - a_j)^2 / (4 beta), and its
  gradient, by explicit enumeration of the pairs (float64)."""
  logp, ref_logp, rewards, m = (np.asarray(x, np.float64) for x in (logp, ref_logp, rewards, m))
  valid = m != 0  # a weight-0 token is left out, whatever its log-probs hold
  s = (np.where(valid, logp, 0.0) * m).sum(-1)
  s_ref = (np.where(valid, ref_logp, 0.0) * m).sum(-1)
  a = rewards - beta * (s - s_ref)
  num_groups = len(a) // group_size
  pairs = [(i, j) for i in range(group_size) for j in range(i + 1, group_size)]
  loss, d_s = 0.0, np.zeros_like(a)
  for g in range(num_groups):
    o = g * group_size
    for i, j in pairs:
      diff = a[o + i] - a[o + j]
      loss += diff ** 2 / (4 * beta) / len(pairs) / num_groups
      # d/ds_i of diff^2 / (4 beta) = 2 diff * (-beta) / (4 beta) = -diff / 2.
      d_s[o + i] += -diff / 2 / len(pairs) / num_groups
      d_s[o + j] += diff / 2 / len(pairs) / num_groups
  return loss, np.where(valid, d_s[:, None] * m, 0.0)


def make_batch(seed, b=4, t=3):
  rng = np.random.default_rng(seed)
  logp = rng.uniform(-3.0, -0.05, (b, t)).astype(np.float32)
  ref = (logp + rng.normal(0.0, 0.5, (b, t))).astype(np.float32)
  mask = (rng.uniform(size=(b, t)) < 0.8).astype(np.float32)
  rewards = rng.normal(size=b).astype(np.float32)
  return logp, ref, rewards, mask


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("beta", [0.05, 0.5, 2.0])
@pytest.mark.parametrize("group_size", [2, 4])
def test_values_and_gradients_match_all_pairs_numpy(beta, group_size):
  logp, ref, rewards, mask = make_batch(0)
  (loss, _), grad = loss_and_grad(logp, ref, rewards, mask, group_size, beta)
  ref_loss, ref_grad = np_copg(logp, ref, rewards, mask, group_size, beta)
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(grad), ref_grad, rtol=1e-5, atol=1e-7)


def test_metrics():
  logp, ref, rewards, mask = make_batch(1)
  (_, mt), _ = loss_and_grad(logp, ref, rewards, mask, 2, 0.5)
  logp64, ref64 = logp.astype(np.float64), ref.astype(np.float64)  # kl_seq is a small difference
  s = (np.where(mask > 0, logp64, 0) * mask).sum(-1) - (np.where(mask > 0, ref64, 0) * mask).sum(-1)
  a = rewards - 0.5 * s
  np.testing.assert_allclose(float(mt["kl_seq"]), s.mean(), rtol=1e-5)
  np.testing.assert_allclose(float(mt["regularized_reward_mean"]), a.mean(), rtol=1e-5)
  var = np.mean([np.var(a[g:g + 2], ddof=1) for g in (0, 2)])
  np.testing.assert_allclose(float(mt["regularized_reward_var"]), var, rtol=1e-5)


def test_ipo_is_a_special_case():
  """A pair with R(y_w) - R(y_l) = 1/2 and beta = tau gives (beta / 4) * IPO's squared loss."""
  logp, ref, _, mask = make_batch(2)
  mask = np.ones_like(mask)
  rewards = np.array([0.5, 0.0, 0.5, 0.0], np.float32)  # rows 0 and 2 are the chosen ones
  beta = 0.3
  h = [(logp[w].sum() - ref[w].sum()) - (logp[l].sum() - ref[l].sum()) for w, l in ((0, 1), (2, 3))]
  ipo = np.mean([(x - 1 / (2 * beta)) ** 2 for x in h])
  (loss, _), _ = loss_and_grad(logp, ref, rewards, mask, 2, beta)
  np.testing.assert_allclose(float(loss), beta / 4 * ipo, rtol=1e-5)


# ----------------------------------------------------------------------------- exact enumeration

T, V = 3, 3
SEQS = jnp.asarray(tabular.all_sequences(V, T))
PREV = np.concatenate([np.full((len(SEQS), 1), V), np.asarray(SEQS)[:, :-1]], axis=1)


def markov_tilt(log_base, bonus):
  """Logits of the Markov chain ∝ Π_t exp(log_base + bonus)[t, y_{t-1}, y_t] (soft Bellman
  backward recursion in float64, independent of the loss code)."""
  q = np.asarray(log_base, np.float64) + bonus
  theta = np.zeros_like(q)
  v_next = np.zeros(V)
  for t in reversed(range(T)):
    theta[t] = q[t] + v_next[None, :]
    m = theta[t].max(-1, keepdims=True)
    v_next = (m + np.log(np.exp(theta[t] - m).sum(-1, keepdims=True)))[:V, 0]
    # Only rows reachable at step t matter: the start row at t = 0, token rows afterwards.
  return jnp.asarray(theta, jnp.float32)


def tabular_problem(seed, beta):
  """pi_ref, a Markov reward r[t, prev, a] (so that pi* is a tabular policy), R(y) and pi*."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  theta_ref = tabular.init_theta(k1, V, T)
  r = np.asarray(jax.random.uniform(k2, (T, V + 1, V)), np.float64)
  rewards = r[np.arange(T)[None], PREV, np.asarray(SEQS)].sum(-1)
  log_ref = np.asarray(jax.nn.log_softmax(theta_ref, -1), np.float64)
  theta_star = markov_tilt(log_ref, r / beta)
  # The fixed point of the product form differentiated through R_beta (the pitfall):
  # pi ∝ pi_ref^(1/2) exp(R / (2 beta)).
  theta_wrong = markov_tilt(0.5 * log_ref, r / (2 * beta))
  return theta_ref, jnp.asarray(rewards, jnp.float32), theta_star, theta_wrong


sequence_probs = jax.jit(tabular.sequence_probs)


@functools.partial(jax.jit, static_argnames=("group_size",))
def expected_copg_gradient(theta, theta_ref, rewards, mu, beta, group_size):
  """E over i.i.d. groups of `group_size` sequences drawn from mu of the CoPG loss gradient."""
  ref_logp = tabular.token_logp(theta_ref, SEQS)

  def group_loss(th, idx):
    lp = tabular.token_logp(th, SEQS[idx])
    return rljax.copg_loss(lp, ref_logp[idx], rewards[idx], jnp.ones((group_size, T)),
                           group_size, beta=beta).loss

  return tabular.expected_group_gradient(group_loss, theta, SEQS, mu, group_size)


@jax.jit
def all_pairs_loss_and_grad(theta, theta_ref, rewards, beta):
  """Every one of the 27 sequences in one group: all 351 pairs, each once."""
  ref_logp = tabular.token_logp(theta_ref, SEQS)
  fn = lambda th: rljax.copg_loss(tabular.token_logp(th, SEQS), ref_logp, rewards,
                                  jnp.ones((len(SEQS), T)), len(SEQS), beta=beta).loss
  return jax.value_and_grad(fn)(theta)


@pytest.mark.parametrize("beta", [0.25, 1.0])
def test_gradient_is_zero_at_the_regularised_optimum_with_all_pairs(beta):
  theta_ref, rewards, theta_star, theta_wrong = tabular_problem(0, beta)
  # pi* really is pi_ref exp(R / beta), normalised (checked by enumeration).
  target = np.asarray(sequence_probs(theta_ref, SEQS), np.float64) * np.exp(
      np.asarray(rewards, np.float64) / beta)
  np.testing.assert_allclose(np.asarray(sequence_probs(theta_star, SEQS)), target / target.sum(),
                             rtol=1e-4)
  loss, grad = all_pairs_loss_and_grad(theta_star, theta_ref, rewards, beta)
  assert float(loss) < 1e-9
  np.testing.assert_allclose(np.asarray(grad), 0.0, atol=2e-5)
  # Elsewhere (at pi_ref, or at the no-stop-gradient fixed point), the gradient is not zero.
  for theta in (theta_ref, theta_wrong):
    _, g = all_pairs_loss_and_grad(theta, theta_ref, rewards, beta)
    assert float(jnp.max(jnp.abs(g))) > 1e-2


@pytest.mark.parametrize("mu_seed", [1, 2])
def test_expected_gradient_is_zero_at_the_optimum_for_any_sampling_policy(mu_seed):
  beta = 0.5
  theta_ref, rewards, theta_star, _ = tabular_problem(0, beta)
  mu = sequence_probs(tabular.init_theta(jax.random.PRNGKey(mu_seed), V, T, 2.0), SEQS)
  g = expected_copg_gradient(theta_star, theta_ref, rewards, mu, beta, 2)
  np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-6)
  g_off = expected_copg_gradient(theta_ref, theta_ref, rewards, mu, beta, 2)
  assert float(jnp.max(jnp.abs(g_off))) > 1e-3


@jax.jit
def regularised_objective_gradient(theta, theta_ref, rewards, beta):
  def objective(th):
    p = tabular.sequence_probs(th, SEQS)
    logp = jnp.sum(tabular.token_logp(th, SEQS), -1)
    logp_ref = jnp.sum(tabular.token_logp(theta_ref, SEQS), -1)
    return jnp.sum(p * rewards) - beta * jnp.sum(p * (logp - logp_ref))
  return jax.grad(objective)(theta)


@pytest.mark.parametrize("group_size", [2, 3])
def test_on_policy_expected_gradient_is_minus_the_regularised_policy_gradient(group_size):
  beta = 0.5
  theta_ref, rewards, _, _ = tabular_problem(3, beta)
  theta = tabular.init_theta(jax.random.PRNGKey(4), V, T)
  g = expected_copg_gradient(theta, theta_ref, rewards, sequence_probs(theta, SEQS), beta,
                             group_size)
  true = regularised_objective_gradient(theta, theta_ref, rewards, beta)
  np.testing.assert_allclose(np.asarray(g), -np.asarray(true), rtol=2e-4, atol=2e-6)


def test_squared_form_has_the_stop_gradient_product_forms_gradient():
  logp, ref, rewards, mask = make_batch(5)
  beta = 0.7

  @jax.jit
  def product_form_grad(lp):
    def loss(lp):
      s = jnp.sum(jnp.where(mask > 0, lp, 0.0) * mask, -1)
      a = rewards - beta * (s - jnp.sum(jnp.where(mask > 0, ref, 0.0) * mask, -1))
      total = 0.0
      for g in (0, 2):  # groups of 2: one pair each
        total += -0.5 * jax.lax.stop_gradient(a[g] - a[g + 1]) * (s[g] - s[g + 1])
      return total / 2
    return jax.grad(loss)(lp)

  _, grad = loss_and_grad(logp, ref, rewards, mask, 2, beta)
  np.testing.assert_allclose(np.asarray(grad), np.asarray(product_form_grad(logp)), rtol=1e-5,
                             atol=1e-7)


def test_gradient_descent_from_off_policy_data_reaches_the_optimum():
  """The paper's toy bandit: a fixed behaviour policy mu, and CoPG still converges to pi*."""
  seqs = jnp.asarray(tabular.all_sequences(3, 1))
  rewards, beta = jnp.array([1.0, 0.5, 0.0]), 0.5
  pref = jnp.array([0.2, 0.3, 0.5])
  theta_ref = jnp.zeros((1, 4, 3)).at[0, 3].set(jnp.log(pref))
  mu = jnp.array([0.6, 0.3, 0.1])

  @jax.jit
  def descend(theta):
    ref_logp = tabular.token_logp(theta_ref, seqs)

    def group_loss(th, idx):
      return rljax.copg_loss(tabular.token_logp(th, seqs[idx]), ref_logp[idx], rewards[idx],
                             jnp.ones((2, 1)), 2, beta=beta).loss

    step = lambda _, th: th - 2.0 * tabular.expected_group_gradient(group_loss, th, seqs, mu, 2)
    return jax.lax.fori_loop(0, 3000, step, theta)

  pi = jax.nn.softmax(descend(jnp.zeros((1, 4, 3)))[0, 3])
  pi_star = np.array([0.2, 0.3, 0.5]) * np.exp(np.array([1.0, 0.5, 0.0]) / beta)
  np.testing.assert_allclose(np.asarray(pi), pi_star / pi_star.sum(), atol=1e-4)


# ----------------------------------------------------------------------------- robustness


@hypothesis.settings(max_examples=30, deadline=None, derandomize=True)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1.0, 1e2, 1e4]),
                  empty=st.booleans())
def test_extreme_inputs_give_finite_loss_and_gradients(seed, scale, empty):
  rng = np.random.default_rng(seed)
  logp = -rng.uniform(0, scale, (4, 3)).astype(np.float32)
  ref = -rng.uniform(0, scale, (4, 3)).astype(np.float32)
  mask = (rng.uniform(size=(4, 3)) < 0.6).astype(np.float32)
  if empty:
    mask[rng.integers(4)] = 0.0
  logp[mask == 0] = -np.inf
  ref[mask == 0] = 1e4
  rewards = rng.normal(size=4).astype(np.float32)
  (loss, metrics), grad = loss_and_grad(logp, ref, rewards, mask, 2, 0.1)
  assert np.isfinite(float(loss))
  assert np.all(np.isfinite(np.asarray(grad)))
  assert np.all(np.asarray(grad)[mask == 0] == 0.0)
  assert all(np.isfinite(float(v)) for v in metrics.values())


def test_weight_zero_tokens_holding_inf_or_nan_change_nothing():
  # On the CPU the row sums are first taken without a select and redone with one only when some
  # row is not finite: a batch whose weight-0 tokens hold inf / NaN takes the second path, the
  # same batch with finite values there the first. Both must equal the NumPy reference exactly
  # as far as float32 goes, fractional weights included.
  logp, ref, rewards, _ = make_batch(12, b=4, t=5)
  mask = np.array([[1, .5, 0, 1, 0], [0, 0, 0, 0, 0], [.25, 1, 1, 0, 1], [1, 1, 1, 1, 1]],
                  np.float32)
  want_loss, want_grad = np_copg(logp, ref, rewards, mask, 2, 0.5)
  dirty_logp, dirty_ref = logp.copy(), ref.copy()
  dirty_logp[mask == 0] = np.array([np.nan, -np.inf, np.inf, -1e30, np.nan, 3.0, -np.inf, np.nan])
  dirty_ref[mask == 0] = np.array([1e4, np.nan, -np.inf, 2.0, np.inf, np.nan, 0.0, -np.inf])
  for lp, rf in ((logp, ref), (dirty_logp, ref), (logp, dirty_ref), (dirty_logp, dirty_ref)):
    (loss, metrics), grad = loss_and_grad(lp, rf, rewards, mask, 2, 0.5)
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-5, atol=1e-7)
    assert all(np.isfinite(float(v)) for v in metrics.values())
  # A weight-1 token at -inf is a real infinite log-ratio: it must show, not be hidden.
  bad = logp.copy()
  bad[3, 2] = -np.inf
  (loss, metrics), _ = loss_and_grad(bad, ref, rewards, mask, 2, 0.5)
  assert not np.isfinite(float(metrics["kl_seq"]))


def test_forward_mode_matches_reverse_mode():
  logp, ref, rewards, mask = make_batch(13)
  v = np.random.default_rng(0).normal(size=logp.shape).astype(np.float32)
  fn = lambda lp: rljax.copg_loss(lp, ref, rewards, mask, 2, beta=0.5).loss
  _, jvp = jax.jit(lambda lp, v: jax.jvp(fn, (lp,), (v,)))(logp, v)
  _, grad = loss_and_grad(logp, ref, rewards, mask, 2, 0.5)
  np.testing.assert_allclose(float(jvp), float(np.sum(np.asarray(grad) * v)), rtol=1e-5)


def test_zero_variance_group_and_empty_batch():
  logp, _, _, mask = make_batch(6)
  (loss, _), grad = loss_and_grad(logp, logp, np.ones(4, np.float32), mask, 2, 0.5)
  # Same reward and log pi = log pi_ref: every pair term is zero.
  assert float(loss) == 0.0 and not np.any(np.asarray(grad))
  (loss, _), grad = loss_and_grad(logp, logp - 1.0, np.zeros(4, np.float32),
                                  np.zeros_like(mask), 2, 0.5)
  assert float(loss) == 0.0 and not np.any(np.asarray(grad))


def test_validation_errors():
  logp, ref, rewards, mask = make_batch(7)
  with pytest.raises(ValueError, match="group_size"):
    rljax.copg_loss(logp, ref, rewards, mask, 1)  # a group of one has no pair
  with pytest.raises(ValueError, match="multiple of group_size"):
    rljax.copg_loss(logp, ref, rewards, mask, 3)
  with pytest.raises(ValueError, match="rewards"):
    rljax.copg_loss(logp, ref, rewards[:2], mask, 2)
  with pytest.raises(ValueError, match="ref_logp"):
    rljax.copg_loss(logp, ref[:, :2], rewards, mask, 2)
  with pytest.raises(ValueError, match="beta"):
    rljax.copg_loss(logp, ref, rewards, mask, 2, beta=0.0)


def test_vmap_matches_a_loop():
  batches = [make_batch(s) for s in (8, 9, 10)]
  stacked = [np.stack(x) for x in zip(*batches)]
  fn = jax.jit(jax.vmap(lambda *a: rljax.copg_loss(*a, 2, beta=0.5).loss))
  np.testing.assert_allclose(np.asarray(fn(*stacked)),
                             [float(loss_and_grad(*b, 2, 0.5)[0][0]) for b in batches],
                             rtol=1e-6)


def test_micro_batches_and_sharding():
  logp, ref, rewards, mask = make_batch(11, b=8)
  (full, _), g_full = loss_and_grad(logp, ref, rewards, mask, 2, 0.5, 4.0)
  total, grads = 0.0, []
  for s in np.split(np.arange(8), 4):  # micro-batches of whole groups, 4 groups in all
    (l, _), g = loss_and_grad(logp[s], ref[s], rewards[s], mask[s], 2, 0.5, 4.0)
    total += float(l)
    grads.append(np.asarray(g))
  np.testing.assert_allclose(total, float(full), rtol=1e-6)
  np.testing.assert_allclose(np.concatenate(grads), np.asarray(g_full), rtol=1e-6, atol=1e-8)
  if jax.device_count() >= 8:
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    row = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    args = (jax.device_put(a, row) for a in (logp, ref, rewards, mask))
    (l8, _), g8 = loss_and_grad(*args, 2, 0.5, 4.0)
    np.testing.assert_allclose(float(l8), float(full), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g8), np.asarray(g_full), rtol=1e-6, atol=1e-8)
