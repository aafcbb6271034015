"""Exact-gradient tests on a tabular softmax policy (vocabulary 3, length 3: 27 sequences).

Expectations over the sampling distribution are exact finite sums (over the 27 sequences, or
over all 27**G ordered G-tuples for group estimators), so "unbiased" is checked as an equality
of gradients, not statistically. Losses are minimised: an unbiased estimator's expected loss
gradient is minus the true policy gradient ∇_θ E_{y~π_θ}[R(y)].

Claims checked (estimators_papers.md §5, §7):
* REINFORCE is unbiased, with any constant baseline and every aggregation mode (scaled by the
  mode's constant: 1, or 1/T at a fixed length T).
* RLOO (leave-one-out baseline) is unbiased; the Dr. GRPO group-mean baseline gives exactly
  (G-1)/G times the true gradient; its `seq-mean-token-sum-norm` constant includes 1/B, so the
  gradient scale does not grow with the number of sequences (verl's constant lacks 1/B).
* KL losses with on-policy samples: k1 has zero expected gradient; k2 gives ∇KL(π‖π_ref); k3
  gives ∇KL(π_ref‖π) (the forward KL). Checked for sequence log-ratios (exact sequence KLs) and
  per token (the per-position KLs, with the state distribution held fixed).
* PPO-clip and CISPO at ratio 1 (old_logp = logp) have REINFORCE's gradient (when exported).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rljax
from tests import tabular

V, T = 3, 3
SEQS = jnp.asarray(tabular.all_sequences(V, T))
N = SEQS.shape[0]
THETA = tabular.init_theta(jax.random.PRNGKey(0), V, T)
THETA_REF = tabular.init_theta(jax.random.PRNGKey(1), V, T)
# Rewards with a large common offset, so a missing or wrong baseline would show.
REWARDS = jnp.asarray(2.0 + np.random.default_rng(0).normal(size=N), jnp.float32)
ONES = jnp.ones((1, T), jnp.float32)


def close(got, want, rtol=1e-4, atol=2e-6):
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=rtol, atol=atol)


@functools.lru_cache(maxsize=None)
def _true_gradient():
  return jax.jit(tabular.true_gradient)(THETA, SEQS, REWARDS)


def _weights(theta=THETA):
  return tabular.sequence_probs(theta, SEQS)


def test_reference_is_a_distribution_and_gradient_is_nontrivial():
  close(jnp.sum(jax.jit(_weights)()), 1.0, atol=1e-6)
  g = _true_gradient()
  assert float(jnp.max(jnp.abs(g))) > 1e-2


# --------------------------------------------------------------------------- REINFORCE


@functools.partial(jax.jit, static_argnames=("mode",))
def _reinforce_expected_grad(theta, baseline, *, mode):
  def loss(th, i):
    lp = tabular.token_logp(th, SEQS[i][None])
    return rljax.reinforce_loss(lp, (REWARDS[i] - baseline)[None], ONES, aggregation=mode).loss
  return tabular.expected_per_sequence_gradient(loss, theta, SEQS, _weights(theta))


@pytest.mark.parametrize("mode", rljax.AGGREGATION_MODES)
def test_reinforce_is_unbiased(mode):
  true = _true_gradient()
  scale = 1.0 if mode == "seq-mean-token-sum" else 1.0 / T
  for baseline in (0.0, 1.7):   # a constant baseline changes nothing in expectation
    close(_reinforce_expected_grad(THETA, baseline, mode=mode), -scale * true)


# --------------------------------------------------------------------------- group baselines


@functools.partial(jax.jit, static_argnames=("kind", "group_size", "mode"))
def _group_expected_grad(theta, *, kind, group_size, mode="seq-mean-token-sum"):
  def loss(th, idx):
    r = REWARDS[idx]
    adv = (rljax.rloo_advantages(r, group_size) if kind == "rloo"
           else rljax.group_advantages(r, group_size, scale="none"))
    lp = tabular.token_logp(th, SEQS[idx])
    return rljax.reinforce_loss(lp, adv, jnp.ones((group_size, T)), aggregation=mode).loss
  return tabular.expected_group_gradient(loss, theta, SEQS, _weights(theta), group_size)


@pytest.mark.parametrize("group_size", [2, 3])
def test_rloo_is_unbiased_over_all_tuples(group_size):
  true = _true_gradient()
  close(_group_expected_grad(THETA, kind="rloo", group_size=group_size), -true)


@pytest.mark.parametrize("group_size", [2, 3])
def test_dr_grpo_mean_baseline_is_scaled_by_g_minus_1_over_g(group_size):
  true = _true_gradient()
  got = _group_expected_grad(THETA, kind="mean", group_size=group_size)
  close(got, -(group_size - 1) / group_size * true)
  # It is biased in scale only: not the true gradient itself.
  assert not np.allclose(np.asarray(got), -np.asarray(true), rtol=1e-2)


def test_dr_grpo_constant_includes_one_over_b():
  # Σ m·ℓ / (B · max_tokens): with G sequences per batch the expected gradient is
  # (G-1)/G · ∇J / T for every G, so the scale does not grow with the batch (verl's Σ m·ℓ / T
  # would be G times larger).
  true = _true_gradient()
  for g in (2, 3):
    got = _group_expected_grad(THETA, kind="mean", group_size=g, mode="seq-mean-token-sum-norm")
    close(got, -(g - 1) / g / T * true)


# --------------------------------------------------------------------------- KL estimators


def _exact_sequence_kls(theta):
  """Exact KL(π‖ref) and KL(ref‖π) over the 27 sequences (differentiable in theta)."""
  lp = jnp.sum(tabular.token_logp(theta, SEQS), axis=-1)
  lr = jnp.sum(tabular.token_logp(THETA_REF, SEQS), axis=-1)
  p, pr = jnp.exp(lp), jnp.exp(lr)
  return jnp.sum(p * (lp - lr)), jnp.sum(pr * (lr - lp))


def _exact_per_position_kls(theta):
  """Σ_y sg(π(y)) Σ_t KL(·) between the next-token distributions at the states of y."""
  prev = jnp.concatenate([jnp.full((N, 1), V), SEQS[:, :-1]], axis=1)
  pos = jnp.arange(T)[None, :]
  lp = jax.nn.log_softmax(theta[pos, prev], axis=-1)        # [N, T, V]
  lr = jax.nn.log_softmax(THETA_REF[pos, prev], axis=-1)
  rev = jnp.sum(jnp.exp(lp) * (lp - lr), axis=-1).sum(-1)   # KL(π‖ref) per state, summed over t
  fwd = jnp.sum(jnp.exp(lr) * (lr - lp), axis=-1).sum(-1)   # KL(ref‖π)
  w = jax.lax.stop_gradient(_weights(theta))
  return jnp.sum(w * rev), jnp.sum(w * fwd)


@functools.partial(jax.jit, static_argnames=("level",))
def _exact_kl_gradients(theta, *, level):
  """(∇ reverse KL, ∇ forward KL) of the sequence KLs or of the per-position KL sums."""
  target = _exact_sequence_kls if level == "sequence" else _exact_per_position_kls
  return jax.jacrev(target)(theta)


@functools.partial(jax.jit, static_argnames=("estimator", "level"))
def _kl_expected_grad(theta, *, estimator, level):
  ref_all = tabular.token_logp(THETA_REF, SEQS)

  def loss(th, i):
    lp = tabular.token_logp(th, SEQS[i][None])
    ref = ref_all[i][None]
    if level == "token":
      # Per-token estimator summed over the sequence.
      return rljax.kl_penalty_loss(lp, ref, ONES, 1.0, estimator=estimator,
                                   aggregation="seq-mean-token-sum").loss
    # The estimator applied to the sequence log-ratio D(y) = log π(y) - log ref(y).
    d = rljax.log_ratio(lp, ref, ONES, level="sequence-sum", clamp=None)[0]
    return {"k1": d, "k2": 0.5 * d * d, "k3": jnp.expm1(-d) + d}[estimator]
  return tabular.expected_per_sequence_gradient(loss, theta, SEQS, _weights(theta))


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_k1_loss_has_zero_expected_gradient_on_policy(level):
  got = _kl_expected_grad(THETA, estimator="k1", level=level)
  close(got, jnp.zeros_like(THETA), atol=2e-6)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_k2_loss_gives_reverse_kl_gradient(level):
  rev, fwd = _exact_kl_gradients(THETA, level=level)
  got = _kl_expected_grad(THETA, estimator="k2", level=level)
  close(got, rev)
  assert not np.allclose(np.asarray(got), np.asarray(fwd), rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_k3_loss_gives_forward_kl_gradient(level):
  rev, fwd = _exact_kl_gradients(THETA, level=level)
  got = _kl_expected_grad(THETA, estimator="k3", level=level)
  close(got, fwd)
  assert not np.allclose(np.asarray(got), np.asarray(rev), rtol=1e-2, atol=1e-3)


@jax.jit
def _kl_values(theta):
  lp_tok = tabular.token_logp(theta, SEQS)
  lr_tok = tabular.token_logp(THETA_REF, SEQS)
  k3 = rljax.kl_divergence(lp_tok, lr_tok, jnp.ones((N, T)), estimator="k3")
  return (jnp.sum(lp_tok, -1), jnp.sum(lr_tok, -1), jnp.sum(_weights(theta) * jnp.sum(k3, -1)),
          _exact_per_position_kls(theta)[0])


def test_kl_estimators_values_are_unbiased_on_policy():
  lp, lr, k3_mean, per_position_kl = _kl_values(THETA)
  # E_π[k3(D)] = KL(π‖ref) for the sequence log-ratio D (value, not gradient) ...
  d = np.asarray(lp, np.float64) - np.asarray(lr, np.float64)
  p = np.exp(np.asarray(lp, np.float64))
  close(np.sum(p * (np.expm1(-d) + d)), np.sum(p * d), rtol=1e-4)
  # ... and per token: E_π Σ_t k3_t equals the sum of per-position KLs.
  close(k3_mean, per_position_kl, rtol=1e-4)


# --------------------------------------------------------------------------- PPO / CISPO at ratio 1

# Required hyperparameters (any value: at ratio 1 the clip is inert).
_ON_POLICY_KWARGS = {"ppo_clip_loss": {}, "cispo_loss": {"epsilon_high": 0.28}}


@pytest.mark.parametrize("name", sorted(_ON_POLICY_KWARGS))
def test_clipped_losses_equal_policy_gradient_at_ratio_one(name):
  fn = getattr(rljax, name)

  @jax.jit
  def expected(theta):
    def loss(th, i):
      lp = tabular.token_logp(th, SEQS[i][None])
      out = fn(lp, jax.lax.stop_gradient(lp), REWARDS[i][None], ONES,
               aggregation="seq-mean-token-sum", **_ON_POLICY_KWARGS[name])
      return out.loss
    return tabular.expected_per_sequence_gradient(loss, theta, SEQS, _weights(theta))

  close(expected(THETA), -_true_gradient())
