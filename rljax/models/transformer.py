"""A Llama / Qwen2-family decoder-only transformer in Flax NNX.

Architecture (Touvron et al., "LLaMA", arXiv:2302.13971; Qwen2 adds q/k/v biases):

    h_0 = E[tokens]
    a_l = h_{l-1} + Attn_l(RMSNorm(h_{l-1}))          (GQA, rotary positions, causal)
    h_l = a_l + W_down (silu(W_gate x) * W_up x),  x = RMSNorm(a_l)     (SwiGLU)
    logits = RMSNorm(h_L) W_out^T                       (float32)

RMSNorm (Zhang & Sennrich, arXiv:1910.07467) as Hugging Face computes it:
`w * (x_f32 * rsqrt(mean(x_f32^2) + eps)).astype(x.dtype)`. Rotary embeddings (Su et al.,
"RoFormer", arXiv:2104.09864) in Hugging Face's `rotate_half` convention: the two halves of each
head are the (real, imaginary) parts, `x * cos + rotate_half(x) * sin` with
`rotate_half([x1, x2]) = [-x2, x1]` and `inv_freq_i = rope_theta^(-2i / head_dim)`.
Grouped-query attention (Ainslie et al., arXiv:2305.13245): query head `h` reads key/value head
`h // (num_heads // num_kv_heads)`; scores are `q.k / sqrt(head_dim)` with a float32 softmax.

Parameter layout (mirrors Hugging Face `LlamaForCausalLM` / `Qwen2ForCausalLM`; an HF name
`model.<path>` is the rljax path `<path>`, and `lm_head.weight` is `lm_head.weight`). Linear
weights are stored `[out, in]` exactly as Hugging Face stores them, so import/export is a copy:

| rljax path (nnx state) | shape |
| --- | --- |
| `embed_tokens.weight` | `[V, D]` |
| `layers[i].input_layernorm.weight` | `[D]` |
| `layers[i].self_attn.q_proj.weight` (`.bias` if `attention_bias`) | `[H*Dh, D]` (`[H*Dh]`) |
| `layers[i].self_attn.k_proj.weight` (`.bias` if `attention_bias`) | `[K*Dh, D]` (`[K*Dh]`) |
| `layers[i].self_attn.v_proj.weight` (`.bias` if `attention_bias`) | `[K*Dh, D]` (`[K*Dh]`) |
| `layers[i].self_attn.o_proj.weight` (`.bias` if `o_proj_bias`) | `[D, H*Dh]` (`[D]`) |
| `layers[i].post_attention_layernorm.weight` | `[D]` |
| `layers[i].mlp.gate_proj.weight` / `up_proj.weight` (`.bias` if `mlp_bias`) | `[F, D]` |
| `layers[i].mlp.down_proj.weight` (`.bias` if `mlp_bias`) | `[D, F]` |
| `norm.weight` | `[D]` |
| `lm_head.weight` (absent when `tie_embeddings`; then the output uses `embed_tokens.weight`) | `[V, D]` |

Each of these is an `nnx.Param`; absent biases are `None` attributes. In `nnx.state(model)` the
layer index is an int key (`state['layers'][0]['self_attn']['q_proj']['weight']`).

Conventions: `tokens int32[B, S]`, `positions int32[B, S]` (the rotary position of each token;
with left padding use `positions = max(cumsum(mask) - 1, 0)`), `attention_mask [B, S]`
(1 on real tokens; padding keys are never attended to). Logits are float32 whatever
`param_dtype` is.

Precision: parameters are stored in `config.param_dtype`; activations and matmul operands are in
`config.activation_dtype` (`compute_dtype`, default `param_dtype`): each weight is cast to it
where it is used, so with float32 parameters and bfloat16 compute the gradients (and the
optimizer state built from them) are float32. Remat: `config.remat` wraps each decoder layer in
`nnx.remat` (see `TransformerConfig.remat`). Sharding: activations carry the constraints of
`rljax.models.sharding` (batch rows on `('data', 'fsdp')`, heads and MLP units on `tensor`),
which are no-ops outside a mesh.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rljax.models import kernels
from rljax.models import sharding
from rljax.models.config import TransformerConfig
from rljax.models.sharding import BATCH, HEADS

# Added to masked attention scores. Finite, so a query row with no visible key (a left-pad
# position) gives a uniform softmax instead of NaN; such rows are masked out downstream.
_MASK_VALUE = -1e30


# ------------------------------------------------------------------ functional primitives


def check_tokens(name: str, tokens) -> None:
  """Raises ValueError unless `tokens` is an integer array of shape [B, S]."""
  if jnp.ndim(tokens) != 2 or not jnp.issubdtype(jnp.result_type(tokens), jnp.integer):
    raise ValueError(f"{name} must be an integer array [B, S], got "
                     f"{jnp.result_type(tokens)}{list(jnp.shape(tokens))}.")


def check_same_shape(name: str, x, ref_name: str, ref) -> None:
  """Raises ValueError unless `x` has the shape of `ref`."""
  if jnp.shape(x) != jnp.shape(ref):
    raise ValueError(f"{name} must have the shape of {ref_name} {list(jnp.shape(ref))}, got "
                     f"{list(jnp.shape(x))}.")


def positions_from_mask(mask: jax.Array) -> jax.Array:
  """Rotary positions that ignore left padding: `max(cumsum(mask) - 1, 0)`.

  Args:
    mask: `[B, S]` 1 (or True) on real tokens.

  Returns:
    int32 `[B, S]`.
  """
  return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


def linear(x: jax.Array, weight: jax.Array, bias: Optional[jax.Array] = None,
           preferred_element_type=None) -> jax.Array:
  """`x @ weight.T + bias` with `weight` stored `[out, in]`.

  Args:
    x: `[..., in]`.
    weight: `[out, in]`.
    bias: optional `[out]`.
    preferred_element_type: accumulation/output dtype (e.g. float32 for logits).

  Returns:
    `[..., out]`.
  """
  y = jax.lax.dot_general(x, weight, (((x.ndim - 1,), (1,)), ((), ())),
                          preferred_element_type=preferred_element_type)
  if bias is not None:
    y = y + bias.astype(y.dtype)
  return y


def rms_norm(x: jax.Array, weight: jax.Array, eps: float, axis: int = -1) -> jax.Array:
  """Hugging Face RMSNorm: statistics in float32, weight applied after the cast back.

  `y = weight * (x / sqrt(mean(x^2, axis) + eps)).astype(x.dtype)`.

  Args:
    x: `[..., D]` (or D on `axis`, e.g. the sampler's feature-major `[D, B]` with `axis=0`).
    weight: `[D]`.
    eps: added to the mean square.
    axis: the feature axis.

  Returns:
    Same shape as `x`, in `x.dtype`.
  """
  dtype = x.dtype
  x32 = x.astype(jnp.float32)
  var = jnp.mean(jnp.square(x32), axis=axis, keepdims=True)
  y = (x32 * jax.lax.rsqrt(var + eps)).astype(dtype)
  shape = [1] * x.ndim
  shape[axis] = -1
  return weight.astype(dtype).reshape(shape) * y


def rope_inv_freq(config: TransformerConfig) -> np.ndarray:
  """Inverse rotary frequencies `theta^(-2i/Dh)`, i < Dh/2, float32 (with rope scaling).

  Follows Hugging Face's `_compute_default_rope_parameters`, and its `linear` and `llama3`
  variants when `config.rope_scaling` names them.
  """
  dim = config.head_dim
  exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
  inv_freq = (np.float32(1.0) /
              (np.float32(config.rope_theta) ** exponent)).astype(np.float32)
  scaling = config.rope_scaling_dict
  rope_type = scaling.get("rope_type", scaling.get("type", "default"))
  if rope_type == "linear":
    inv_freq = inv_freq / np.float32(scaling["factor"])
  elif rope_type == "llama3":
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    inv_freq = np.where(medium, smoothed, scaled)
  return np.asarray(inv_freq, np.float32)


def rope_cos_sin(positions: jax.Array, inv_freq: np.ndarray | jax.Array
                 ) -> tuple[jax.Array, jax.Array]:
  """Rotary tables for given positions.

  Args:
    positions: int `[B, S]`.
    inv_freq: float32 `[Dh/2]`.

  Returns:
    `(cos, sin)`, float32 `[B, S, Dh]` each, with the frequencies repeated over both halves.
  """
  freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """`x * cos + rotate_half(x) * sin` (Hugging Face convention).

  Args:
    x: `[B, S, N, Dh]` (N heads).
    cos: `[B, S, Dh]`.
    sin: `[B, S, Dh]`.

  Returns:
    `[B, S, N, Dh]` in `x.dtype`.
  """
  cos = cos[:, :, None, :].astype(x.dtype)
  sin = sin[:, :, None, :].astype(x.dtype)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos + rotated * sin


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *,
              kv_layout: str = "BTKD") -> jax.Array:
  """Grouped-query softmax attention with a float32 softmax (the plain reference).

  The training forward pass uses `rljax.models.kernels.attention`, the same function in a
  faster form; the sampler uses this one (its cache is 'BKTD').

  `out = softmax(q k^T / sqrt(Dh) + mask) v`, query head h using kv head h // (H / K).

  Args:
    q: `[B, S, H, Dh]`.
    k: `[B, T, K, Dh]` (kv_layout 'BTKD') or `[B, K, T, Dh]` (kv_layout 'BKTD', the cache).
    v: same layout as `k`.
    mask: bool `[B, S, T]`, True where query s may attend to key t.
    kv_layout: 'BTKD' or 'BKTD'.

  Returns:
    `[B, S, H * Dh]` in `v.dtype`.
  """
  b, s, h, d = q.shape
  kv_heads = k.shape[2] if kv_layout == "BTKD" else k.shape[1]
  g = h // kv_heads
  q = q.reshape(b, s, kv_heads, g, d)
  kspec = "btkd" if kv_layout == "BTKD" else "bktd"
  scores = jnp.einsum(f"bskgd,{kspec}->bkgst", q, k,
                      preferred_element_type=jnp.float32)
  scores = scores * np.float32(1.0 / math.sqrt(d))
  scores = jnp.where(mask[:, None, None, :, :], scores, _MASK_VALUE)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum(f"bkgst,{kspec}->bskgd", probs, v)
  return out.reshape(b, s, h * d)


def causal_mask(attention_mask: jax.Array) -> jax.Array:
  """bool `[B, S, S]`: key t visible to query s iff t <= s and key t is a real token."""
  s = attention_mask.shape[-1]
  causal = jnp.tril(jnp.ones((s, s), dtype=jnp.bool_))
  return causal[None] & attention_mask.astype(jnp.bool_)[:, None, :]


# ------------------------------------------------------------------------------ modules


def _normal(rngs: nnx.Rngs, shape, std, dtype):
  return (std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)


class Linear(nnx.Module):
  """Dense layer with weight `[out, in]` (Hugging Face `nn.Linear` layout)."""

  def __init__(self, in_features: int, out_features: int, *, use_bias: bool,
               dtype, init_std: float, rngs: nnx.Rngs):
    self.weight = nnx.Param(_normal(rngs, (out_features, in_features), init_std, dtype))
    self.bias = nnx.Param(jnp.zeros((out_features,), dtype)) if use_bias else None

  def __call__(self, x: jax.Array) -> jax.Array:
    """`x @ weight.T + bias` in `x.dtype` (the weight is cast to the activations' dtype)."""
    bias = None if self.bias is None else self.bias[...]
    return linear(x, self.weight[...].astype(x.dtype), bias)


class Embedding(nnx.Module):
  """Token embedding table `weight [V, D]`."""

  def __init__(self, num_embeddings: int, features: int, *, dtype, init_std: float,
               rngs: nnx.Rngs):
    self.weight = nnx.Param(_normal(rngs, (num_embeddings, features), init_std, dtype))

  def __call__(self, tokens: jax.Array) -> jax.Array:
    return jnp.take(self.weight[...], tokens, axis=0)


class RMSNorm(nnx.Module):
  """RMSNorm with a learned scale `weight [D]` initialised to one."""

  def __init__(self, features: int, *, eps: float, dtype):
    self.weight = nnx.Param(jnp.ones((features,), dtype))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    return rms_norm(x, self.weight[...], self.eps)


class Attention(nnx.Module):
  """Causal grouped-query self-attention with rotary positions."""

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    c = config
    kw = dict(dtype=c.dtype, init_std=c.initializer_range, rngs=rngs)
    self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
    self.q_proj = Linear(c.d_model, c.num_heads * c.head_dim, use_bias=c.attention_bias, **kw)
    self.k_proj = Linear(c.d_model, c.num_kv_heads * c.head_dim, use_bias=c.attention_bias, **kw)
    self.v_proj = Linear(c.d_model, c.num_kv_heads * c.head_dim, use_bias=c.attention_bias, **kw)
    self.o_proj = Linear(c.num_heads * c.head_dim, c.d_model, use_bias=c.o_proj_bias, **kw)

  def project(self, x: jax.Array, cos: jax.Array, sin: jax.Array
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Rotated queries and keys and the values: x `[B, S, D]` -> `[B, S, H|K, Dh]` each."""
    b, s, _ = x.shape
    heads = lambda y, n: sharding.constrain(y.reshape(b, s, n, self.head_dim),
                                            (BATCH, None, HEADS))
    q = heads(self.q_proj(x), self.num_heads)
    k = heads(self.k_proj(x), self.num_kv_heads)
    v = heads(self.v_proj(x), self.num_kv_heads)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

  def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array,
               mask: jax.Array) -> jax.Array:
    """x `[B, S, D]`, cos/sin `[B, S, Dh]`, mask bool `[B, S, S]` -> `[B, S, D]`."""
    q, k, v = self.project(x, cos, sin)
    return self.o_proj(kernels.attention(q, k, v, mask))


class MLP(nnx.Module):
  """SwiGLU feed-forward: `down(silu(gate(x)) * up(x))` (Shazeer, arXiv:2002.05202)."""

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    c = config
    kw = dict(dtype=c.dtype, init_std=c.initializer_range, rngs=rngs, use_bias=c.mlp_bias)
    self.gate_proj = Linear(c.d_model, c.ffn_dim, **kw)
    self.up_proj = Linear(c.d_model, c.ffn_dim, **kw)
    self.down_proj = Linear(c.ffn_dim, c.d_model, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    hidden = jax.nn.silu(self.gate_proj(x)) * self.up_proj(x)
    return self.down_proj(sharding.constrain(hidden, (BATCH, None, HEADS)))


class DecoderLayer(nnx.Module):
  """Pre-norm decoder block: attention then SwiGLU, each with a residual connection."""

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    c = config
    self.input_layernorm = RMSNorm(c.d_model, eps=c.rms_norm_eps, dtype=c.dtype)
    self.self_attn = Attention(c, rngs=rngs)
    self.post_attention_layernorm = RMSNorm(c.d_model, eps=c.rms_norm_eps, dtype=c.dtype)
    self.mlp = MLP(c, rngs=rngs)

  def __call__(self, x, cos, sin, mask):
    x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
    x = x + self.mlp(self.post_attention_layernorm(x))
    return sharding.constrain(x, (BATCH,))


_REMAT_POLICIES = {
    "block": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
}


def remat_layer(call, remat: str):
  """`call(layer, *args)` (one decoder layer's work) under the `remat` mode's policy."""
  if remat == "none":
    return call
  return nnx.remat(call, policy=_REMAT_POLICIES[remat])


def _layer_fn(remat: str):
  """`f(layer, x, cos, sin, mask)` running one decoder layer with the `remat` mode's policy."""
  return remat_layer(lambda layer, x, cos, sin, mask: layer(x, cos, sin, mask), remat)


class Transformer(nnx.Module):
  """Decoder-only Llama/Qwen2 transformer; see the module docstring for the parameter layout.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> cfg = TransformerConfig(vocab_size=32, d_model=16, num_layers=1, num_heads=2,
    ...                         num_kv_heads=1, head_dim=8, ffn_dim=32)
    >>> model = Transformer(cfg, rngs=nnx.Rngs(0))
    >>> tokens = jnp.array([[0, 5, 6]])
    >>> mask = jnp.array([[0, 1, 1]])
    >>> model(tokens, positions_from_mask(mask), mask).shape
    (1, 3, 32)
  """

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    if not isinstance(config, TransformerConfig):
      raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}.")
    c = config
    self.config = c
    self.embed_tokens = Embedding(c.vocab_size, c.d_model, dtype=c.dtype,
                                  init_std=c.initializer_range, rngs=rngs)
    self.layers = nnx.List([DecoderLayer(c, rngs=rngs) for _ in range(c.num_layers)])
    self.norm = RMSNorm(c.d_model, eps=c.rms_norm_eps, dtype=c.dtype)
    if c.tie_embeddings:
      self.lm_head = None
    else:
      self.lm_head = Linear(c.d_model, c.vocab_size, use_bias=False, dtype=c.dtype,
                            init_std=c.initializer_range, rngs=rngs)

  @property
  def output_embedding(self) -> jax.Array:
    """The `[V, D]` output projection (`lm_head.weight`, or `embed_tokens.weight` if tied),
    in the activation dtype (the output matmul accumulates in float32)."""
    weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
    return weight[...].astype(self.config.activation_dtype)

  def _check_inputs(self, tokens, positions, attention_mask):
    check_tokens("tokens", tokens)
    if attention_mask is None:
      attention_mask = jnp.ones(tokens.shape, jnp.bool_)
    check_same_shape("attention_mask", attention_mask, "tokens", tokens)
    if positions is None:
      positions = positions_from_mask(attention_mask)
    check_same_shape("positions", positions, "tokens", tokens)
    return positions, attention_mask

  def hidden_states(self, tokens: jax.Array, positions: Optional[jax.Array] = None,
                    attention_mask: Optional[jax.Array] = None) -> jax.Array:
    """Final-normed hidden states `[B, S, D]` (activation dtype), before the output projection.

    Args:
      tokens: int `[B, S]`.
      positions: int `[B, S]`; default `positions_from_mask(attention_mask)`.
      attention_mask: `[B, S]`, 1 on real tokens; default all ones.
    """
    positions, attention_mask = self._check_inputs(tokens, positions, attention_mask)
    cos, sin = rope_cos_sin(positions, rope_inv_freq(self.config))
    mask = causal_mask(attention_mask)
    x = self.embed_tokens(tokens).astype(self.config.activation_dtype)
    x = sharding.constrain(x, (BATCH,))
    layer_fn = _layer_fn(self.config.remat)
    for layer in self.layers:
      x = layer_fn(layer, x, cos, sin, mask)
    return self.norm(x)

  def logits_from_hidden(self, hidden: jax.Array) -> jax.Array:
    """float32 logits `[..., V]` from hidden states `[..., D]`."""
    return linear(hidden, self.output_embedding, preferred_element_type=jnp.float32)

  def __call__(self, tokens: jax.Array, positions: Optional[jax.Array] = None,
               attention_mask: Optional[jax.Array] = None) -> jax.Array:
    """Causal forward pass.

    Args:
      tokens: int `[B, S]`.
      positions: int `[B, S]` rotary positions; default `positions_from_mask(attention_mask)`.
      attention_mask: `[B, S]`, 1 on real tokens (padding keys are masked); default all ones.

    Returns:
      float32 logits `[B, S, V]`; `logits[b, s]` predicts `tokens[b, s + 1]`.
    """
    return self.logits_from_hidden(self.hidden_states(tokens, positions, attention_mask))
