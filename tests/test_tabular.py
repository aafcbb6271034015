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
