"""Sanity checks of the tabular reference itself (independent of any estimator)."""

import jax
import jax.numpy as jnp
import numpy as np

from tests import tabular


def test_probabilities_sum_to_one_and_match_manual_product():
  seqs = jnp.asarray(tabular.all_sequences(3, 3))
  theta = tabular.init_theta(jax.random.PRNGKey(0), 3, 3)
  p = tabular.sequence_probs(theta, seqs)
  np.testing.assert_allclose(float(jnp.sum(p)), 1.0, rtol=1e-6)
  th = np.asarray(theta, np.float64)
  y = [2, 0, 1]
  manual, prev = 1.0, 3
  for t, tok in enumerate(y):
    z = th[t, prev]
    manual *= np.exp(z[tok]) / np.exp(z).sum()
    prev = tok
  idx = int(np.where((np.asarray(seqs) == y).all(axis=1))[0][0])
  np.testing.assert_allclose(float(p[idx]), manual, rtol=1e-5)


def test_true_gradient_matches_finite_differences():
  seqs = jnp.asarray(tabular.all_sequences(3, 2))
  theta = tabular.init_theta(jax.random.PRNGKey(1), 3, 2)
  rewards = jnp.asarray(np.random.default_rng(0).normal(size=seqs.shape[0]), jnp.float32)
  g = tabular.true_gradient(theta, seqs, rewards)
  j = lambda th: float(np.sum(np.asarray(tabular.sequence_probs(th, seqs), np.float64)
                              * np.asarray(rewards, np.float64)))
  e = np.zeros(theta.shape, np.float32)
  e[1, 2, 0] = 1e-2
  fd = (j(theta + e) - j(theta - e)) / 2e-2
  np.testing.assert_allclose(float(g[1, 2, 0]), fd, rtol=2e-2, atol=1e-4)


# --------------------------------------------------------------------------- variable length


def test_ragged_sequences_are_every_stopped_or_truncated_sequence():
  seqs = tabular.ragged_sequences(2, 3)
  eos = 2
  # V^(L-1) sequences end at EOS for each L < T; at L = T any last token is allowed.
  assert seqs.tokens.shape == (1 + 2 + 4 * 3, 3)
  np.testing.assert_array_equal(np.bincount(seqs.lengths), [0, 1, 2, 12])
  assert len({tuple(r) for r in seqs.tokens}) == len(seqs.tokens)
  for row, m, n in zip(seqs.tokens, seqs.mask, seqs.lengths):
    np.testing.assert_array_equal(m, np.arange(3) < n)
    assert eos not in row[:n - 1]                 # nothing is generated after EOS
    assert n == 3 or row[n - 1] == eos            # a short sequence ends with EOS
    assert np.all(row[n:] == eos)                 # padding


def test_ragged_probabilities_sum_to_one_and_match_manual_product():
  seqs = tabular.ragged_sequences(2, 3)
  theta = tabular.init_ragged_theta(0, 2, 3)
  p = np.asarray(tabular.ragged_sequence_probs(theta, seqs), np.float64)
  np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-6)
  th = np.asarray(theta, np.float64)
  for y in ([2], [0, 2], [1, 0, 1], [1, 1, 2]):
    manual, prev = 1.0, 2                         # row 2 is the start state
    for t, tok in enumerate(y):
      z = th[t, prev]
      manual *= np.exp(z[tok]) / np.exp(z).sum()
      prev = tok
    idx = [n for n, (r, k) in enumerate(zip(seqs.tokens, seqs.lengths))
           if k == len(y) and list(r[:k]) == y]
    np.testing.assert_allclose(p[idx[0]], manual, rtol=1e-5)
  # Every length carries probability, so length-weighted objectives differ from E[R].
  p_len = np.array([p[seqs.lengths == k].sum() for k in (1, 2, 3)])
  assert p_len.min() > 0.05


def test_ragged_numpy_scores_match_autodiff_and_finite_differences():
  seqs = tabular.ragged_sequences(2, 3)
  theta = tabular.init_ragged_theta(3, 2, 3)
  scores = tabular.np_token_scores(theta, seqs.tokens, seqs.mask)      # [N, T, P]
  lp = tabular.np_token_logp(theta, seqs.tokens, seqs.mask)
  np.testing.assert_allclose(
      lp, np.asarray(tabular.token_logp(theta, jnp.asarray(seqs.tokens))) * seqs.mask, atol=1e-5)
  jac = jax.jacrev(lambda th: jnp.sum(tabular.token_logp(th, jnp.asarray(seqs.tokens))
                                      * seqs.mask, -1))(theta)
  np.testing.assert_allclose(scores.sum(1), np.asarray(jac).reshape(len(seqs.tokens), -1),
                             atol=1e-5)
  # Policy-gradient theorem in the reference itself: Σ π R score = ∇ Σ π R, by central
  # differences of the float64 sum.
  rewards = np.random.default_rng(0).normal(size=len(seqs.tokens))
  th = np.asarray(theta, np.float64)
  j = lambda x: np.sum(np.exp(tabular.np_token_logp(x, seqs.tokens, seqs.mask).sum(-1))
                       * rewards)
  p = np.exp(lp.sum(-1))
  pg = np.einsum("n,n,np->p", p, rewards, scores.sum(1))
  for flat in (0, 7, 13, 26):
    e = np.zeros(th.size)
    e[flat] = 1e-5
    e = e.reshape(th.shape)
    np.testing.assert_allclose(pg[flat], (j(th + e) - j(th - e)) / 2e-5, rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(
      np.asarray(tabular.ragged_true_gradient(theta, seqs, rewards)).ravel(), pg, atol=1e-5)
