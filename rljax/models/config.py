"""Configuration of the rljax decoder transformer (Llama / Qwen2 family).

`TransformerConfig` is a frozen, hashable dataclass, so it can be a static argument of `jax.jit`.
Its fields follow the Hugging Face `LlamaConfig` / `Qwen2Config` fields they correspond to:

| rljax field | Hugging Face `config.json` key |
| --- | --- |
| `vocab_size` | `vocab_size` |
| `d_model` | `hidden_size` |
| `num_layers` | `num_hidden_layers` |
| `num_heads` | `num_attention_heads` |
| `num_kv_heads` | `num_key_value_heads` (defaults to `num_attention_heads`) |
| `head_dim` | `head_dim` (defaults to `hidden_size // num_attention_heads`) |
| `ffn_dim` | `intermediate_size` |
| `rope_theta` | `rope_theta` (or `rope_parameters.rope_theta` in newer files) |
| `rms_norm_eps` | `rms_norm_eps` |
| `tie_embeddings` | `tie_word_embeddings` |
| `attention_bias` | Qwen2: always `True`; Llama: `attention_bias` (bias on q, k, v) |
| `o_proj_bias` | Llama: `attention_bias` (Llama puts the bias on `o_proj` too); Qwen2: `False` |
| `mlp_bias` | Llama: `mlp_bias`; Qwen2: `False` |
| `max_seq_len` | `max_position_embeddings` |
| `rope_scaling` | `rope_scaling` of type `llama3` or `linear` (as a sorted tuple of items) |
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import jax.numpy as jnp

_DTYPES = {
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
}


# Rematerialisation of the decoder layers in the backward pass (see `TransformerConfig.remat`).
REMAT_MODES = ("none", "block", "full")


def _dtype_name(dtype: Any, field: str = "param_dtype") -> str:
  try:
    name = jnp.dtype(dtype).name
  except TypeError:
    name = None
  if name not in _DTYPES:
    raise ValueError(
        f"{field} must be one of {sorted(_DTYPES)}, got {dtype!r}.")
  return name


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Shape and numerics of a Llama/Qwen2-style decoder.

  Attributes:
    vocab_size: number of token ids V.
    d_model: width D of the residual stream (`hidden_size`).
    num_layers: number of decoder blocks.
    num_heads: number of query heads H.
    num_kv_heads: number of key/value heads K (grouped-query attention when K < H; H % K == 0).
    head_dim: per-head width Dh (need not equal D / H).
    ffn_dim: hidden width F of the SwiGLU MLP (`intermediate_size`).
    rope_theta: base of the rotary frequencies, inv_freq_i = theta^(-2i/Dh).
    rms_norm_eps: epsilon of RMSNorm.
    tie_embeddings: if True the output projection reuses the token embedding (no `lm_head`).
    attention_bias: bias on the q, k and v projections (Qwen2 has it).
    o_proj_bias: bias on the attention output projection (Llama with `attention_bias=True`).
    mlp_bias: bias on gate, up and down projections (Llama `mlp_bias`).
    param_dtype: dtype the parameters are stored in, 'float32', 'bfloat16' or 'float16'
      (stored as a name so the config stays hashable).
    compute_dtype: dtype of activations and matmul operands (parameters are cast to it where
      they are used); None (the default) means `param_dtype`. RMSNorm statistics, the
      attention softmax, logits and log-softmax are float32 whatever it is. The recommended
      mixed-precision mode is `param_dtype='float32', compute_dtype='bfloat16'`: parameters,
      gradients and the optimizer state stay float32 (the float32 master copy), matmuls run
      in bfloat16.
    remat: rematerialisation of each decoder layer in the backward pass of `Transformer`
      (the prefill/decode path of the sampler has no backward pass and ignores it):
      'none': autodiff keeps every intermediate it needs;
      'block': each layer runs under `jax.checkpoint` with the policy
        `dots_with_no_batch_dims_saveable`: the outputs of the weight matmuls (q/k/v, o,
        gate/up/down projections) are kept, everything else of the layer (norms, rotary
        embeddings, attention scores and softmax, SwiGLU) is recomputed;
      'full': each layer runs under `jax.checkpoint` with `nothing_saveable`: only the layer's
        input is kept and the whole layer is recomputed in the backward pass.
      Values and gradients are the same in every mode; only memory and time change.
    max_seq_len: longest sequence the model is meant for (`max_position_embeddings`).
    initializer_range: standard deviation of the normal initialiser (as Hugging Face).
    rope_scaling: None, or a sorted tuple of (key, value) pairs of a Hugging Face
      `rope_scaling` dict with `rope_type` 'linear' or 'llama3'.
  """

  vocab_size: int
  d_model: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  ffn_dim: int
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-6
  tie_embeddings: bool = False
  attention_bias: bool = False
  param_dtype: str = "float32"
  max_seq_len: int = 2048
  o_proj_bias: bool = False
  mlp_bias: bool = False
  initializer_range: float = 0.02
  rope_scaling: tuple[tuple[str, Any], ...] | None = None
  compute_dtype: str | None = None
  remat: str = "none"

  def __post_init__(self):
    object.__setattr__(self, "param_dtype", _dtype_name(self.param_dtype))
    if self.compute_dtype is not None:
      object.__setattr__(self, "compute_dtype",
                         _dtype_name(self.compute_dtype, "compute_dtype"))
    if self.remat not in REMAT_MODES:
      raise ValueError(f"remat must be one of {list(REMAT_MODES)}, got {self.remat!r}.")
    if isinstance(self.rope_scaling, Mapping):
      object.__setattr__(self, "rope_scaling",
                         tuple(sorted(self.rope_scaling.items())))
    for name in ("vocab_size", "d_model", "num_layers", "num_heads",
                 "num_kv_heads", "head_dim", "ffn_dim", "max_seq_len"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
          f"({self.num_kv_heads}).")
    if self.head_dim % 2:
      raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}.")
    if self.rope_theta <= 0:
      raise ValueError(f"rope_theta must be positive, got {self.rope_theta}.")
    if self.rope_scaling is not None:
      rope_type = self.rope_scaling_dict.get(
          "rope_type", self.rope_scaling_dict.get("type"))
      if rope_type not in ("linear", "llama3", "default"):
        raise ValueError(
            "rope_scaling type must be one of ['default', 'linear', 'llama3'], got "
            f"{rope_type!r}.")

  @property
  def dtype(self):
    """The jnp dtype the parameters are stored in (`param_dtype`)."""
    return _DTYPES[self.param_dtype]

  @property
  def activation_dtype(self):
    """The jnp dtype of activations and matmul operands (`compute_dtype`, else `param_dtype`)."""
    return _DTYPES[self.compute_dtype or self.param_dtype]

  @property
  def rope_scaling_dict(self) -> dict[str, Any]:
    return dict(self.rope_scaling or ())

  def replace(self, **kwargs) -> "TransformerConfig":
    return dataclasses.replace(self, **kwargs)

  @property
  def num_params(self) -> int:
    """Number of parameters (embedding counted once when tied)."""
    d, f, v = self.d_model, self.ffn_dim, self.vocab_size
    q = self.num_heads * self.head_dim
    kv = self.num_kv_heads * self.head_dim
    attn = d * (q + 2 * kv) + q * d
    if self.attention_bias:
      attn += q + 2 * kv
    if self.o_proj_bias:
      attn += d
    mlp = 3 * d * f + ((2 * f + d) if self.mlp_bias else 0)
    per_layer = attn + mlp + 2 * d
    total = self.num_layers * per_layer + v * d + d
    if not self.tie_embeddings:
      total += v * d
    return total

  # ---------------------------------------------------------------- presets

  @classmethod
  def tiny(cls, vocab_size: int = 512, **overrides) -> "TransformerConfig":
    """A 4-layer, d_model 256 Llama (4.46M params at vocab 512) that trains on a CPU."""
    kw = dict(vocab_size=vocab_size, d_model=256, num_layers=4, num_heads=4,
              num_kv_heads=4, head_dim=64, ffn_dim=1024, rope_theta=10000.0,
              rms_norm_eps=1e-6, tie_embeddings=False, attention_bias=False,
              max_seq_len=2048)
    kw.update(overrides)
    return cls(**kw)

  @classmethod
  def qwen2_0_5b(cls, **overrides) -> "TransformerConfig":
    """The shapes of Qwen2/Qwen2.5-0.5B (494M params, tied embeddings, GQA 14/2)."""
    kw = dict(vocab_size=151936, d_model=896, num_layers=24, num_heads=14,
              num_kv_heads=2, head_dim=64, ffn_dim=4864, rope_theta=1000000.0,
              rms_norm_eps=1e-6, tie_embeddings=True, attention_bias=True,
              max_seq_len=32768)
    kw.update(overrides)
    return cls(**kw)

  @classmethod
  def from_hf_config(cls, config: Mapping[str, Any] | str | os.PathLike,
                     **overrides) -> "TransformerConfig":
    """Builds a config from a Hugging Face Llama or Qwen2 `config.json`.

    Args:
      config: a dict of the JSON, a path to `config.json`, or a checkpoint directory holding one.
      **overrides: fields to set after conversion (e.g. `param_dtype='float32'`).

    Returns:
      The matching `TransformerConfig`.

    Raises:
      ValueError: for model types other than llama/qwen2/mistral, or unsupported features
        (activations other than SiLU, sliding-window attention, rope scaling other than
        linear/llama3).
    """
    if not isinstance(config, Mapping):
      path = os.fspath(config)
      if os.path.isdir(path):
        path = os.path.join(path, "config.json")
      with open(path) as f:
        config = json.load(f)
    c = dict(config)
    model_type = c.get("model_type", "llama")
    if model_type not in ("llama", "qwen2", "mistral"):
      raise ValueError(
          "from_hf_config supports model_type in ['llama', 'mistral', 'qwen2'], got "
          f"{model_type!r}.")
    if c.get("hidden_act", "silu") not in ("silu", "swish"):
      raise ValueError(f"hidden_act must be 'silu' (SwiGLU MLP), got {c.get('hidden_act')!r}.")
    if c.get("use_sliding_window", False) or (
        model_type == "mistral" and c.get("sliding_window")):
      raise ValueError("Sliding-window attention is not supported (use_sliding_window).")
    num_heads = c["num_attention_heads"]
    head_dim = c.get("head_dim") or c["hidden_size"] // num_heads
    rope_theta = c.get("rope_theta")
    rope_scaling = c.get("rope_scaling")
    params = c.get("rope_parameters")  # transformers >= 5 layout
    if isinstance(params, Mapping):
      rope_theta = params.get("rope_theta", rope_theta)
      if params.get("rope_type", "default") != "default":
        rope_scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    if rope_scaling is not None and rope_scaling.get(
        "rope_type", rope_scaling.get("type")) == "default":
      rope_scaling = None
    if model_type == "qwen2":
      qkv_bias, o_bias, mlp_bias = True, False, False
    else:
      qkv_bias = o_bias = bool(c.get("attention_bias", False))
      mlp_bias = bool(c.get("mlp_bias", False))
    dtype = c.get("torch_dtype") or c.get("dtype") or "float32"
    if dtype not in _DTYPES:
      dtype = "float32"
    kw = dict(
        vocab_size=c["vocab_size"],
        d_model=c["hidden_size"],
        num_layers=c["num_hidden_layers"],
        num_heads=num_heads,
        num_kv_heads=c.get("num_key_value_heads") or num_heads,
        head_dim=head_dim,
        ffn_dim=c["intermediate_size"],
        rope_theta=float(rope_theta if rope_theta is not None else 10000.0),
        rms_norm_eps=float(c.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(c.get("tie_word_embeddings", model_type == "qwen2")),
        attention_bias=qkv_bias,
        o_proj_bias=o_bias,
        mlp_bias=mlp_bias,
        param_dtype=dtype,
        max_seq_len=int(c.get("max_position_embeddings", 2048)),
        initializer_range=float(c.get("initializer_range", 0.02)),
        rope_scaling=(tuple(sorted(rope_scaling.items()))
                      if rope_scaling else None),
    )
    kw.update(overrides)
    return cls(**kw)

  def to_hf_config(self, model_type: str | None = None) -> dict[str, Any]:
    """The Hugging Face `config.json` dict for this config.

    Args:
      model_type: 'llama' or 'qwen2'; by default 'qwen2' when the config has q/k/v bias and no
        o_proj/MLP bias, else 'llama'.
    """
    if model_type is None:
      model_type = ("qwen2" if self.attention_bias and not self.o_proj_bias
                    and not self.mlp_bias else "llama")
    if model_type == "qwen2":
      if not self.attention_bias or self.o_proj_bias or self.mlp_bias:
        raise ValueError("A qwen2 config needs attention_bias=True, o_proj_bias=False, "
                         "mlp_bias=False.")
    elif model_type == "llama":
      if self.attention_bias != self.o_proj_bias:
        raise ValueError("Llama ties the q/k/v and o_proj biases: attention_bias must equal "
                         "o_proj_bias.")
    else:
      raise ValueError(f"model_type must be one of ['llama', 'qwen2'], got {model_type!r}.")
    out = {
        "architectures": ["Qwen2ForCausalLM" if model_type == "qwen2"
                          else "LlamaForCausalLM"],
        "model_type": model_type,
        "vocab_size": self.vocab_size,
        "hidden_size": self.d_model,
        "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads,
        "num_key_value_heads": self.num_kv_heads,
        "head_dim": self.head_dim,
        "intermediate_size": self.ffn_dim,
        "rope_theta": self.rope_theta,
        "rms_norm_eps": self.rms_norm_eps,
        "tie_word_embeddings": self.tie_embeddings,
        "max_position_embeddings": self.max_seq_len,
        "initializer_range": self.initializer_range,
        "hidden_act": "silu",
        "torch_dtype": self.param_dtype,
    }
    if model_type == "llama":
      out["attention_bias"] = self.attention_bias
      out["mlp_bias"] = self.mlp_bias
    else:
      out["use_sliding_window"] = False
    if self.rope_scaling is not None:
      out["rope_scaling"] = self.rope_scaling_dict
    return out
