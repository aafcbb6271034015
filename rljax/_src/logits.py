"""From logits to per-token log-probabilities and entropies (float32 whatever the input dtype)."""

import jax
import jax.numpy as jnp

from rljax._src import validation


def _scaled_log_softmax(logits, temperature):
  validation.check_floating("logits", logits)
  if jnp.ndim(logits) < 2:
    raise ValueError(f"logits must have shape [..., V], got {list(jnp.shape(logits))}.")
  validation.check_positive("temperature", temperature)
  return jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)


def token_logp_from_logits(logits: jax.Array, tokens: jax.Array, *,
                           temperature: float = 1.0) -> jax.Array:
  r"""Log-probability of each token, :math:`\log\mathrm{softmax}(z/\tau)[y]`, in float32.

  Args:
    logits: [B, T, V] unnormalised scores (any float dtype; computed in float32).
    tokens: [B, T] integer token ids whose log-probability is wanted.
    temperature: sampling temperature τ > 0 (divide the logits before the softmax, as the
      sampler does, so that ratios against sampler log-probs are 1 on-policy).

  Returns:
    [B, T] float32.

  Example:
    >>> import jax.numpy as jnp, rljax
    >>> z = jnp.log(jnp.array([[[.25, .75]]]))
    >>> round(float(rljax.token_logp_from_logits(z, jnp.array([[1]]))[0, 0]), 4)
    -0.2877
  """
  if jnp.shape(tokens) != jnp.shape(logits)[:-1]:
    raise ValueError(f"tokens must have shape {list(jnp.shape(logits)[:-1])} (logits without "
                     f"the vocabulary axis), got {list(jnp.shape(tokens))}.")
  if not jnp.issubdtype(jnp.result_type(tokens), jnp.integer):
    raise ValueError(f"tokens must be integer, got dtype {jnp.result_type(tokens)}.")
  logp = _scaled_log_softmax(logits, temperature)
  return jnp.take_along_axis(logp, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]


def entropy_from_logits(logits: jax.Array, *, temperature: float = 1.0) -> jax.Array:
  r"""Entropy of the softmax, :math:`H = -\sum_v p_v \log p_v`, per position, in float32.

  Entries with :math:`p_v = 0` (logits of -inf, e.g. a masked vocabulary) contribute 0 to the
  value and the gradient (double `where`), so both stay finite.

  Args:
    logits: [..., V].
    temperature: τ > 0.

  Returns:
    [...] float32 (e.g. [B, T] for [B, T, V] logits).
  """
  logp = _scaled_log_softmax(logits, temperature)
  p = jnp.exp(logp)
  # Double-where: where p == 0 (a -inf logit) logp is -inf, and the backward pass of p * logp
  # would compute 0 * -inf = NaN even though that product is selected away.
  safe_logp = jnp.where(p > 0, logp, 0.0)
  return -jnp.sum(p * safe_logp, axis=-1)
