"""Exact policy-gradient reference: a tabular softmax policy over all sequences.

The policy generates T tokens from a vocabulary of V; the logits of token t depend on (t, y_{t-1})
through a table theta[T, V + 1, V] (row V is the start state). With V = 3 and T = 3 there are 27
sequences, so every expectation over the policy is an exact finite sum, and the true policy
gradient of J(theta) = E_{y ~ pi_theta}[R(y)] is obtained by differentiating that sum.

An estimator is unbiased when the expectation of its gradient over the sampling distribution
(again an exact sum, over single sequences or over all G-tuples for group estimators) equals the
true gradient. These helpers are shared by the estimator tests.

A variable-length variant (below `ragged_sequences`) adds an end-of-sequence token, so lengths
run over 1..T with ragged masks, and a float64 NumPy reference (`np_token_scores`) gives the
per-token score functions for closed-form expected gradients.
"""

import itertools
from typing import NamedTuple

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
  length, states, _ = theta.shape
  # The last row is the start state: index V for both tables (fixed length: [T, V + 1, V];
  # variable length: [T, V + 1, V + 1], whose extra column is EOS).
  prev = jnp.concatenate([jnp.full((seqs.shape[0], 1), states - 1), seqs[:, :-1]], axis=1)
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


# --------------------------------------------------------------------------- variable length
#
# A vocabulary of V content tokens and an end-of-sequence token EOS = V. A sequence stops at
# EOS (included: it is a generated token with mask 1) or after T tokens, so lengths run over
# 1..T and the masks are ragged. The logits of token t depend on (t, y_{t-1}) through a table
# theta[T, V + 1, V + 1]: row V is the start state (a previous token is never EOS), column V is
# EOS. The policy's length distribution therefore depends on theta, and so does every
# length-weighted objective. With V = 2 and T = 3 there are 1 + 2 + 4 * 3 = 15 sequences.


class RaggedSequences(NamedTuple):
  """Every sequence of a variable-length tabular policy, padded to T.

  Attributes:
    tokens: int32[N, T], padded with EOS after the end (the padding's log-probs are finite
      numbers that a correct loss must ignore, so a mask error shows in the gradient).
    mask: float32[N, T], 1 on the |y| generated tokens (EOS included), 0 on the padding.
    lengths: int32[N], |y| in 1..T.
  """

  tokens: np.ndarray
  mask: np.ndarray
  lengths: np.ndarray


def ragged_sequences(vocab: int, max_len: int) -> RaggedSequences:
  """Every sequence of `vocab` content tokens ending at EOS (= `vocab`) or after `max_len`."""
  eos = vocab
  rows = []
  for length in range(1, max_len + 1):
    for body in itertools.product(range(vocab), repeat=length - 1):
      rows.append(body + (eos,))           # stopped by EOS
      if length == max_len:
        rows.extend(body + (v,) for v in range(vocab))  # truncated at T
  tokens = np.full((len(rows), max_len), eos, np.int32)
  mask = np.zeros((len(rows), max_len), np.float32)
  for n, row in enumerate(rows):
    tokens[n, :len(row)] = row
    mask[n, :len(row)] = 1.0
  return RaggedSequences(tokens, mask, mask.sum(-1).astype(np.int32))


def ragged_rewards(seqs: RaggedSequences, vocab: int) -> np.ndarray:
  """A reward of content and length: 2 + (number of token 0) - |y| / 2, minus 1 if truncated.

  Truncated means the sequence reached `max_len` without EOS (= `vocab`).
  """
  n = seqs.tokens.shape[0]
  zeros = ((seqs.tokens == 0) * seqs.mask).sum(-1)
  truncated = seqs.tokens[np.arange(n), seqs.lengths - 1] != vocab
  return 2.0 + zeros - 0.5 * seqs.lengths - 1.0 * truncated


def init_ragged_theta(seed: int, vocab: int, max_len: int, scale: float = 1.0) -> jax.Array:
  """Logit table float32[max_len, vocab + 1, vocab + 1] (NumPy's generator, a stable stream)."""
  rng = np.random.default_rng(seed)
  return jnp.asarray(scale * rng.normal(size=(max_len, vocab + 1, vocab + 1)), jnp.float32)


def ragged_sequence_probs(theta: jax.Array, seqs: RaggedSequences) -> jax.Array:
  """π_θ(y) = Π_{t < |y|} π_θ(y_t | y_{t-1}) for every sequence [N]; sums to 1."""
  lp = token_logp(theta, jnp.asarray(seqs.tokens))
  return jnp.exp(jnp.sum(lp * seqs.mask, axis=-1))


def ragged_true_gradient(theta: jax.Array, seqs: RaggedSequences, values) -> jax.Array:
  """∇_θ Σ_y π_θ(y) f(y) for a fixed f (e.g. R, or R / |y|), by differentiating the sum."""
  values = jnp.asarray(values, jnp.float32)
  return jax.grad(lambda th: jnp.sum(ragged_sequence_probs(th, seqs) * values))(theta)


# NumPy (float64) reference of the same policy, written without JAX, so that closed-form
# expected gradients do not depend on the autodiff that the losses under test use.


def _np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_token_logp(theta, tokens, mask) -> np.ndarray:
  """float64[N, T] log π(y_t | y_{t-1}), 0 on the padding."""
  theta = np.asarray(theta, np.float64)
  start = theta.shape[1] - 1
  out = np.zeros(tokens.shape)
  for n, t in zip(*np.nonzero(mask)):
    prev = start if t == 0 else tokens[n, t - 1]
    out[n, t] = np.log(_np_softmax(theta[t, prev])[tokens[n, t]])
  return out


def np_token_scores(theta, tokens, mask) -> np.ndarray:
  """float64[N, T, theta.size]: ∇_θ log π(y_t | y_{t-1}) per token, 0 on the padding.

  For a softmax over the row theta[t, prev] the score is onehot(y_t) - softmax(theta[t, prev])
  on that row and 0 elsewhere.
  """
  theta = np.asarray(theta, np.float64)
  start = theta.shape[1] - 1
  out = np.zeros(tokens.shape + theta.shape)
  for n, t in zip(*np.nonzero(mask)):
    prev = start if t == 0 else tokens[n, t - 1]
    out[n, t, t, prev] = -_np_softmax(theta[t, prev])
    out[n, t, t, prev, tokens[n, t]] += 1.0
  return out.reshape(tokens.shape + (-1,))
