"""Exact policy-gradient reference: a tabular softmax policy over all sequences.

The policy generates T tokens from a vocabulary of V; the logits of token t depend on (t, y_{t-1})
through a table theta[T, V + 1, V] (row V is the start state). With V = 3 and T = 3 there are 27
sequences, so every expectation over the policy is an exact finite sum, and the true policy
gradient of J(theta) = E_{y ~ pi_theta}[R(y)] is obtained by differentiating that sum.

An estimator is unbiased when the expectation of its gradient over the sampling distribution
(again an exact sum, over single sequences or over all G-tuples for group estimators) equals the
true gradient. These helpers are shared by the estimator tests.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np


def all_sequences(vocab: int, length: int) -> np.ndarray:
  """Every sequence of `length` tokens from `vocab`: int32[vocab**length, length]."""
  return np.array(list(itertools.product(range(vocab), repeat=length)), np.int32)


def init_theta(key, vocab: int, length: int, scale: float = 1.0) -> jax.Array:
  return scale * jax.random.normal(key, (length, vocab + 1, vocab), jnp.float32)


def token_logp(theta: jax.Array, seqs: jax.Array) -> jax.Array:
  """Per-token log-probs [N, T] of `seqs` [N, T] under the tabular policy `theta`."""
  length, _, vocab = theta.shape
  prev = jnp.concatenate([jnp.full((seqs.shape[0], 1), vocab), seqs[:, :-1]], axis=1)
  logits = theta[jnp.arange(length)[None, :], prev]  # [N, T, V]
  logp = jax.nn.log_softmax(logits, axis=-1)
  return jnp.take_along_axis(logp, seqs[..., None], axis=-1)[..., 0]


def sequence_probs(theta: jax.Array, seqs: jax.Array) -> jax.Array:
  """π_θ(y) for every sequence [N]; sums to 1 over `all_sequences`."""
  return jnp.exp(jnp.sum(token_logp(theta, seqs), axis=-1))


def true_gradient(theta: jax.Array, seqs: jax.Array, rewards: jax.Array) -> jax.Array:
  """∇_θ Σ_y π_θ(y) R(y), exactly."""
  return jax.grad(lambda th: jnp.sum(sequence_probs(th, seqs) * rewards))(theta)


def expected_per_sequence_gradient(loss_fn, theta, seqs, weights):
  """Σ_y w(y) ∇_θ loss_fn(θ, y-index) for a loss evaluated on one sequence at a time.

  `loss_fn(theta, i)` returns the scalar loss of sequence i (a batch of one row); `weights` are
  the sampling probabilities μ(y). Returns the expected *loss* gradient (minus the ascent
  direction).
  """
  def weighted(th):
    losses = jax.vmap(lambda i: loss_fn(th, i))(jnp.arange(seqs.shape[0]))
    return jnp.sum(jax.lax.stop_gradient(weights) * losses)
  return jax.grad(weighted)(theta)


def all_tuples(num_sequences: int, group_size: int) -> np.ndarray:
  """Every ordered G-tuple of sequence indices: int32[N**G, G]."""
  return all_sequences(num_sequences, group_size)


def expected_group_gradient(group_loss_fn, theta, seqs, weights, group_size):
  """E over i.i.d. G-tuples (y_1..y_G ~ w) of ∇_θ group_loss_fn(θ, indices[G]), exactly."""
  tuples = jnp.asarray(all_tuples(seqs.shape[0], group_size))
  tuple_w = jnp.prod(weights[tuples], axis=-1)

  def weighted(th):
    losses = jax.vmap(lambda idx: group_loss_fn(th, idx))(tuples)
    return jnp.sum(jax.lax.stop_gradient(tuple_w) * losses)
  return jax.grad(weighted)(theta)
