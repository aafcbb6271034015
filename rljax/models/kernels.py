"""Fast forms of the model's primitives, each beside the plain one in `transformer.py`.

`attention` is `transformer.attention` (the plain reference: scores, mask, float32 softmax,
weighted sum written out as einsums) computed by `jax.nn.dot_product_attention`, which XLA
lowers to a fused attention (cuDNN's on GPU where it applies; on CPU a formulation that,
with the launcher's YNN fusion flag, ran the RL update's forward + backward in 7.0 s instead
of 13.3 s at 64 rows x 320 tokens and 1.2 s instead of 2.3 s at 64 x 80, 4-layer Llama,
hidden 256, 2 threads). tests/test_model_kernels.py checks the two agree to float32 rounding,
values and gradients, with padding and grouped-query heads.
"""

from __future__ import annotations

import jax


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  """Grouped-query softmax attention, as `transformer.attention` with kv_layout 'BTKD'.

  `out = softmax(q k^T / sqrt(Dh) + mask) v`, query head h using kv head h // (H / K); a query
  row with no visible key (a left-pad position) gets a uniform softmax, as in the reference.

  Args:
    q: `[B, S, H, Dh]`.
    k: `[B, T, K, Dh]`.
    v: `[B, T, K, Dh]`.
    mask: bool `[B, S, T]`, True where query s may attend to key t.

  Returns:
    `[B, S, H * Dh]` in `v.dtype`.
  """
  b, s, h, d = q.shape
  out = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], implementation=None)
  return out.astype(v.dtype).reshape(b, s, h * d)
