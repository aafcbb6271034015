"""Argument checks shared by the estimators.

Every public function validates its inputs at trace time with messages that name the argument and
the shape at fault, so a wrong call fails at the line that made it rather than deep inside XLA.
"""

from typing import Iterable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def check_choice(name: str, value: str, valid: Iterable[str]) -> None:
  """Raises ValueError naming `name` and listing the valid values if `value` is not one of them."""
  valid = tuple(valid)
  if value not in valid:
    raise ValueError(f"{name}={value!r} is not valid; expected one of {valid}.")


def check_shape(name: str, x, shape: Sequence[Optional[int]]) -> None:
  """Checks that `x` has rank len(shape) and matching sizes (None matches any size)."""
  x_shape = tuple(np.shape(x))
  if len(x_shape) != len(shape) or any(
      s is not None and s != xs for s, xs in zip(shape, x_shape)):
    expected = "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"
    raise ValueError(f"{name} must have shape {expected}, got {list(x_shape)}.")


def check_same_shape(names_and_arrays) -> None:
  """Checks that all arrays share the shape of the first one; names the first mismatch."""
  (name0, x0), *rest = names_and_arrays
  s0 = tuple(np.shape(x0))
  for name, x in rest:
    if x is None:
      continue
    if tuple(np.shape(x)) != s0:
      raise ValueError(
          f"{name} must have the same shape as {name0} {list(s0)}, got {list(np.shape(x))}.")


def check_floating(name: str, x) -> None:
  if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
    raise ValueError(f"{name} must be a floating array, got dtype {jnp.result_type(x)}.")


def check_token_inputs(logp, mask, **others) -> None:
  """Checks `logp` is floating [B, T], `mask` is [B, T], and every other array is [B, T] too."""
  check_floating("logp", logp)
  if np.ndim(logp) != 2:
    raise ValueError(f"logp must have shape [B, T], got {list(np.shape(logp))}.")
  check_same_shape([("logp", logp), ("mask", mask)] + list(others.items()))
  check_mask_weights(mask)


def check_mask_weights(mask) -> None:
  """Raises ValueError if a concrete (not traced) mask holds a negative or non-finite weight.

  Mask weights are >= 0 throughout rljax. Under `jit` the values cannot be checked; the losses
  then leave a weight-0 token out whatever it holds, and negative weights are undefined.
  """
  if isinstance(mask, jax.core.Tracer):
    return
  dtype = jnp.result_type(mask)
  if dtype == jnp.bool_ or jnp.issubdtype(dtype, jnp.unsignedinteger):
    return
  m = np.asarray(mask)
  bad = ~(m >= 0) | ~np.isfinite(m) if jnp.issubdtype(dtype, jnp.floating) else m < 0
  if np.any(bad):
    where = tuple(int(i) for i in np.argwhere(bad)[0])
    raise ValueError(f"mask must hold weights >= 0 (finite); got {m[where]} at index "
                     f"{list(where)}.")


def check_sequence_array(name: str, x, batch: int) -> None:
  """Checks a per-sequence array has shape [B]."""
  check_shape(name, x, (batch,))


def check_positive(name: str, value, *, allow_none: bool = False, strict: bool = True) -> None:
  """Checks a Python hyperparameter is positive (skipped for traced values)."""
  if value is None:
    if allow_none:
      return
    raise ValueError(f"{name} must be set, got None.")
  if isinstance(value, jax.core.Tracer):
    return
  v = float(value)
  if not np.isfinite(v) or (v <= 0 if strict else v < 0):
    raise ValueError(f"{name} must be {'> 0' if strict else '>= 0'} and finite, got {value}.")


def mask_as_float(mask) -> jax.Array:
  """Returns the mask as float32 weights; accepts bool, int or float masks."""
  return jnp.asarray(mask).astype(jnp.float32)


def advantages_as_tokens(advantages, logp) -> jax.Array:
  """Broadcasts sequence advantages [B] to [B, T]; passes [B, T] advantages through."""
  advantages = jnp.asarray(advantages, jnp.float32)
  if advantages.ndim == 1:
    check_shape("advantages", advantages, (logp.shape[0],))
    return jnp.broadcast_to(advantages[:, None], logp.shape)
  check_shape("advantages", advantages, logp.shape)
  return advantages


