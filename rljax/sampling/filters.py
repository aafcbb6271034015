"""Truncation of next-token distributions: top-k, top-p (nucleus) and min-p.

Each filter takes logits `[..., V]` (already divided by the temperature) and returns logits of the
same shape with the removed tokens set to -inf, so `log_softmax` of the result is the
log-probability under the truncated, renormalised distribution that is sampled from. At least one
token (the most probable) always survives. Ties at a threshold are kept (all tokens whose logit
equals the k-th largest survive top-k). `filter_logits` applies them in Hugging Face's order:
top-k, then top-p on the top-k distribution, then min-p.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


def _check_logits(logits):
  if logits.ndim < 1 or not jnp.issubdtype(logits.dtype, jnp.floating):
    raise ValueError(f"logits must be a floating array [..., V], got {logits.dtype}"
                     f"{list(logits.shape)}.")


def top_k_logits(logits: jax.Array, k: int) -> jax.Array:
  """Keeps the `k` largest logits per row (and any tied with the k-th), -inf elsewhere.

  Args:
    logits: `[..., V]`.
    k: static int >= 1; `k >= V` keeps everything.

  Returns:
    `[..., V]`.
  """
  _check_logits(logits)
  if not isinstance(k, int) or k < 1:
    raise ValueError(f"top_k must be an int >= 1, got {k!r}.")
  if k >= logits.shape[-1]:
    return logits
  kth = jax.lax.top_k(logits, k)[0][..., -1:]
  return jnp.where(logits >= kth, logits, -jnp.inf)


def top_p_logits(logits: jax.Array, p: float, *,
                 sorted_logits: Optional[jax.Array] = None) -> jax.Array:
  """Nucleus filter: keeps the smallest set of most probable tokens with total mass >= p.

  Holtzman et al., "The Curious Case of Neural Text Degeneration", arXiv:1904.09751. With the
  probabilities sorted in decreasing order, token i (0-based) is kept iff
  `sum_{j<i} p_(j) < p`; the most probable token is always kept.

  Args:
    logits: `[..., V]`.
    p: in (0, 1]; 1 keeps everything.
    sorted_logits: optional `[..., M]` the M largest logits of each row in decreasing order,
      covering every token with non-zero probability (e.g. the values of `lax.top_k` after a
      top-k filter); computed by sorting when omitted.

  Returns:
    `[..., V]`.
  """
  _check_logits(logits)
  if isinstance(p, (int, float)) and not 0.0 < p <= 1.0:
    raise ValueError(f"top_p must be in (0, 1], got {p}.")
  if isinstance(p, (int, float)) and p >= 1.0:
    return logits
  if sorted_logits is None:
    sorted_logits = -jnp.sort(-logits, axis=-1)
  probs = jax.nn.softmax(sorted_logits.astype(jnp.float32), axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  num_keep = jnp.maximum(jnp.sum(mass_before < p, axis=-1, keepdims=True), 1)
  threshold = jnp.take_along_axis(sorted_logits, num_keep - 1, axis=-1)
  return jnp.where(logits >= threshold, logits, -jnp.inf)


def min_p_logits(logits: jax.Array, min_p: float) -> jax.Array:
  """Min-p filter: keeps tokens with `prob >= min_p * max_prob`.

  Nguyen et al., "Turning Up the Heat: Min-p Sampling for Creative and Coherent LLM Outputs",
  arXiv:2407.01082. Equivalent to `logit >= max_logit + log(min_p)`.

  Args:
    logits: `[..., V]`.
    min_p: in [0, 1]; 0 keeps everything.

  Returns:
    `[..., V]`.
  """
  _check_logits(logits)
  if isinstance(min_p, (int, float)) and not 0.0 <= min_p <= 1.0:
    raise ValueError(f"min_p must be in [0, 1], got {min_p}.")
  if isinstance(min_p, (int, float)) and min_p == 0.0:
    return logits
  threshold = jnp.max(logits, axis=-1, keepdims=True) + jnp.log(min_p)
  return jnp.where(logits >= threshold, logits, -jnp.inf)


def filter_logits(logits: jax.Array, *, top_k: Optional[int] = None,
                  top_p: Optional[float] = None,
                  min_p: Optional[float] = None) -> jax.Array:
  """Applies top-k, then top-p, then min-p (each optional), as Hugging Face orders them.

  Args:
    logits: `[..., V]` temperature-scaled logits.
    top_k: None or static int >= 1.
    top_p: None or float in (0, 1].
    min_p: None or float in [0, 1].

  Returns:
    `[..., V]` with removed tokens at -inf.

  Example:
    >>> import jax.numpy as jnp
    >>> z = jnp.log(jnp.array([0.5, 0.3, 0.15, 0.05]))
    >>> jnp.isfinite(filter_logits(z, top_p=0.7)).tolist()
    [True, True, False, False]
  """
  sorted_top = None
  if top_k is not None:
    if not isinstance(top_k, int) or top_k < 1:
      raise ValueError(f"top_k must be an int >= 1, got {top_k!r}.")
    if top_k < logits.shape[-1]:
      sorted_top, _ = jax.lax.top_k(logits, top_k)
      logits = jnp.where(logits >= sorted_top[..., -1:], logits, -jnp.inf)
  if top_p is not None:
    logits = top_p_logits(logits, top_p, sorted_logits=sorted_top)
  if min_p is not None:
    logits = min_p_logits(logits, min_p)
  return logits
