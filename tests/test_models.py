"""Tests for rljax.models: config, transformer (against a NumPy reference) and score()."""

import doctest
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rljax.models import (Transformer, TransformerConfig, logp_from_hidden,
                          positions_from_mask, score, score_fn)
from rljax.models import config as config_lib
from rljax.models import scoring as scoring_lib
from rljax.models import transformer as transformer_lib

SMALL = TransformerConfig(vocab_size=64, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2,
                          head_dim=16, ffn_dim=128, rope_theta=500.0)
# Qwen2-like: q/k/v bias, tied embeddings, head_dim != d_model / num_heads.
SMALL_QWEN = SMALL.replace(attention_bias=True, tie_embeddings=True, head_dim=8, num_kv_heads=1)


def _model(cfg, seed=0, randomize_norms=True):
  model = Transformer(cfg, rngs=nnx.Rngs(seed))
  if randomize_norms:
    # Non-trivial norm scales and biases so that the reference test covers them.
    rng = np.random.RandomState(seed + 1)
    flat = nnx.to_flat_state(nnx.state(model))
    for path, var in flat:
      if path[-1] == "bias" or "norm" in str(path[-2]):
        value = var.get_value()
        var.set_value(jnp.asarray(
            np.asarray(value) + 0.1 * rng.randn(*value.shape), value.dtype))
    nnx.update(model, nnx.from_flat_state(flat))
  return model


@jax.jit
def _forward_jit(graphdef, state, tokens, positions, mask):
  return nnx.merge(graphdef, state)(tokens, positions, mask)


def _forward(model, tokens, positions=None, mask=None):
  """The model's forward pass under one jit (eager op-by-op dispatch is slow on CPU)."""
  tokens = jnp.asarray(tokens)
  mask = jnp.ones_like(tokens) if mask is None else jnp.asarray(mask)
  positions = positions_from_mask(mask) if positions is None else jnp.asarray(positions)
  return _forward_jit(*nnx.split(model), tokens, positions, mask)


_score_jit = jax.jit(score_fn, static_argnames=("temperature", "return_entropy", "chunk_size"))


def _score(model, *args, **kwargs):
  return _score_jit(*nnx.split(model), *[jnp.asarray(a) for a in args], **kwargs)


def _params_np(model):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), nnx.to_pure_dict(nnx.state(model)))


def _reference_logits(cfg, params, tokens, positions, mask):
  """Straightforward float64 NumPy Llama/Qwen2 forward pass, one head and one row at a time."""
  def lin(x, p):
    y = x @ p["weight"].T
    return y + p["bias"] if "bias" in p else y

  def norm(x, w):
    return w * x / np.sqrt(np.mean(x * x, -1, keepdims=True) + cfg.rms_norm_eps)

  def rope(x, pos):  # x [S, Dh]; pairs (i, i + Dh/2) rotate by angle pos * theta^(-2i/Dh).
    half = x.shape[-1] // 2
    ang = pos[:, None] * cfg.rope_theta ** (-2.0 * np.arange(half) / x.shape[-1])
    x1, x2 = x[:, :half], x[:, half:]
    return np.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang),
                           x2 * np.cos(ang) + x1 * np.sin(ang)], -1)

  b, s = tokens.shape
  dh, group = cfg.head_dim, cfg.num_heads // cfg.num_kv_heads
  out = np.zeros((b, s, cfg.vocab_size))
  for r in range(b):
    x = params["embed_tokens"]["weight"][tokens[r]]
    pos = positions[r].astype(np.float64)
    for i in range(cfg.num_layers):
      p = params["layers"][i]
      y = norm(x, p["input_layernorm"]["weight"])
      q = lin(y, p["self_attn"]["q_proj"])
      k = lin(y, p["self_attn"]["k_proj"])
      v = lin(y, p["self_attn"]["v_proj"])
      heads = []
      for h in range(cfg.num_heads):
        kvh = h // group
        qh = rope(q[:, h * dh:(h + 1) * dh], pos)
        kh = rope(k[:, kvh * dh:(kvh + 1) * dh], pos)
        vh = v[:, kvh * dh:(kvh + 1) * dh]
        att = qh @ kh.T / math.sqrt(dh)
        allowed = np.tril(np.ones((s, s), bool)) & (mask[r] != 0)[None, :]
        att = np.where(allowed, att - att.max(-1, keepdims=True), -np.inf)
        w = np.exp(att)
        # A left-pad query sees no key: give it zero output (its logits are never used).
        w = np.where(allowed.any(-1, keepdims=True), w, 0.0)
        w = w / np.maximum(w.sum(-1, keepdims=True), 1e-300)
        heads.append(w @ vh)
      x = x + lin(np.concatenate(heads, -1), p["self_attn"]["o_proj"])
      y = norm(x, p["post_attention_layernorm"]["weight"])
      g = lin(y, p["mlp"]["gate_proj"])
      x = x + lin(g / (1 + np.exp(-g)) * lin(y, p["mlp"]["up_proj"]), p["mlp"]["down_proj"])
    x = norm(x, params["norm"]["weight"])
    head = (params["embed_tokens"]["weight"] if cfg.tie_embeddings
            else params["lm_head"]["weight"])
    out[r] = x @ head.T
  return out


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _batch(seed=0, b=3, s=9, vocab=64):
  rng = np.random.RandomState(seed)
  tokens = rng.randint(0, vocab, (b, s)).astype(np.int32)
  mask = np.ones((b, s), np.int32)
  if b > 1:
    mask[1, :3] = 0  # left padding
  if b > 2:
    mask[2, :s - 2] = 0
  return tokens, mask


# ------------------------------------------------------------------------------- config


def test_config_param_counts():
  # tiny: per layer 4*256^2 (attention) + 3*256*1024 (MLP) + 2*256 (norms);
  # untied 512x256 embedding and head; final norm 256.
  tiny = TransformerConfig.tiny()
  expected = 4 * (4 * 256 * 256 + 3 * 256 * 1024 + 2 * 256) + 2 * 512 * 256 + 256
  assert tiny.num_params == expected == 4_458_752
  model = nnx.eval_shape(lambda: Transformer(tiny, rngs=nnx.Rngs(0)))
  assert sum(x.size for x in jax.tree.leaves(nnx.state(model))) == expected
  # Qwen2-0.5B has 494,032,768 parameters (tied embeddings).
  assert TransformerConfig.qwen2_0_5b().num_params == 494_032_768


def test_config_from_hf_dicts():
  qwen = {"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896,
          "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
          "intermediate_size": 4864, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
          "tie_word_embeddings": True, "max_position_embeddings": 32768,
          "torch_dtype": "bfloat16"}
  cfg = TransformerConfig.from_hf_config(qwen, param_dtype="float32")
  assert cfg == TransformerConfig.qwen2_0_5b()
  llama = {"model_type": "llama", "vocab_size": 100, "hidden_size": 32,
           "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64,
           "attention_bias": True, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                                                    "low_freq_factor": 1.0,
                                                    "high_freq_factor": 4.0,
                                                    "original_max_position_embeddings": 64}}
  cfg = TransformerConfig.from_hf_config(llama)
  assert (cfg.num_kv_heads, cfg.head_dim, cfg.attention_bias, cfg.o_proj_bias) == (4, 8, True,
                                                                                    True)
  assert TransformerConfig.from_hf_config(cfg.to_hf_config()) == cfg
  hash(cfg)  # static-argument friendly


def test_config_errors():
  with pytest.raises(ValueError, match="num_heads"):
    SMALL.replace(num_kv_heads=3)
  with pytest.raises(ValueError, match="param_dtype"):
    SMALL.replace(param_dtype="int8")
  with pytest.raises(ValueError, match="model_type"):
    TransformerConfig.from_hf_config({"model_type": "gpt2"})
  with pytest.raises(ValueError, match="hidden_act"):
    TransformerConfig.from_hf_config({"model_type": "llama", "hidden_act": "gelu"})


def test_llama3_rope_scaling_matches_formula():
  scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
             "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
  cfg = SMALL.replace(rope_scaling=scaling, rope_theta=10000.0)
  base = 10000.0 ** (-np.arange(0, 16, 2) / 16)
  wavelen = 2 * np.pi / base
  expected = []
  for f, wl in zip(base, wavelen):
    if wl < 64 / 4.0:  # high frequency: unchanged
      expected.append(f)
    elif wl > 64 / 1.0:  # low frequency: divided by the factor
      expected.append(f / 8.0)
    else:  # interpolate
      smooth = (64 / wl - 1.0) / (4.0 - 1.0)
      expected.append((1 - smooth) * f / 8.0 + smooth * f)
  np.testing.assert_allclose(transformer_lib.rope_inv_freq(cfg), expected, rtol=1e-5)


# -------------------------------------------------------------------------- primitives


def test_rms_norm_matches_numpy():
  x = np.random.RandomState(0).randn(3, 5, 16).astype(np.float32)
  w = np.random.RandomState(1).randn(16).astype(np.float32)
  expected = w * x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-5)
  got = transformer_lib.rms_norm(jnp.asarray(x), jnp.asarray(w), 1e-5)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_rope_is_relative():
  """q(m).k(n) after rotary embedding depends on m - n only."""
  cfg = SMALL
  rng = np.random.RandomState(0)
  q = jnp.asarray(rng.randn(1, 1, 1, cfg.head_dim), jnp.float32)
  k = jnp.asarray(rng.randn(1, 1, 1, cfg.head_dim), jnp.float32)
  inv = transformer_lib.rope_inv_freq(cfg)

  def dot(m, n):
    cq, sq = transformer_lib.rope_cos_sin(jnp.array([[m]]), inv)
    ck, sk = transformer_lib.rope_cos_sin(jnp.array([[n]]), inv)
    return float(jnp.sum(transformer_lib.apply_rope(q, cq, sq) *
                         transformer_lib.apply_rope(k, ck, sk)))

  assert dot(7, 3) == pytest.approx(dot(24, 20), rel=1e-4)
  assert dot(0, 0) == pytest.approx(float(jnp.sum(q * k)), rel=1e-5)
  assert dot(7, 3) != pytest.approx(dot(7, 4), rel=1e-3)


# ------------------------------------------------------------------------- transformer


@pytest.mark.parametrize("cfg", [SMALL, SMALL_QWEN], ids=["llama", "qwen2"])
def test_forward_matches_numpy_reference(cfg):
  model = _model(cfg)
  tokens, mask = _batch(vocab=cfg.vocab_size)
  positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
  got = _forward(model, tokens, positions, mask)
  assert got.dtype == jnp.float32 and got.shape == (3, 9, cfg.vocab_size)
  expected = _reference_logits(cfg, _params_np(model), tokens, positions, mask)
  real = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(got)[real], expected[real], rtol=1e-4, atol=1e-4)
  assert np.isfinite(np.asarray(got)).all()  # padding rows too


def test_left_padding_and_causality():
  model = _model(SMALL)
  tokens, _ = _batch(b=1, s=8)
  pad = 3
  padded = np.concatenate([np.zeros((1, pad), np.int32), tokens], 1)
  mask = np.concatenate([np.zeros((1, pad), np.int32), np.ones((1, 8), np.int32)], 1)
  full = _forward(model, tokens)
  left = _forward(model, padded, None, mask)
  np.testing.assert_allclose(left[:, pad:], full, atol=1e-5)
  changed = tokens.copy()
  changed[0, 5:] = (changed[0, 5:] + 1) % SMALL.vocab_size
  out = _forward(model, changed)
  np.testing.assert_allclose(out[:, :5], full[:, :5], atol=1e-6)
  assert not np.allclose(out[:, 5:], full[:, 5:])


def test_bfloat16_params_give_float32_logits():
  cfg = SMALL.replace(param_dtype="bfloat16")
  model = _model(cfg, randomize_norms=False)
  leaves = jax.tree.leaves(nnx.state(model))
  assert all(x.dtype == jnp.bfloat16 for x in leaves)
  tokens, mask = _batch()
  logits = _forward(model, tokens, None, mask)
  assert logits.dtype == jnp.float32
  logp = _score(model, tokens, mask, mask)
  assert logp.dtype == jnp.float32 and np.isfinite(np.asarray(logp)).all()


def test_input_validation():
  model = _model(SMALL, randomize_norms=False)
  with pytest.raises(ValueError, match="tokens"):
    model(jnp.zeros((4,), jnp.int32))
  with pytest.raises(ValueError, match="attention_mask"):
    model(jnp.zeros((2, 4), jnp.int32), None, jnp.ones((2, 5)))
  with pytest.raises(ValueError, match="temperature"):
    score(model, jnp.zeros((2, 4), jnp.int32), jnp.ones((2, 4)), jnp.ones((2, 4)),
          temperature=0.0)
  with pytest.raises(ValueError, match="mask"):
    score(model, jnp.zeros((2, 4), jnp.int32), jnp.ones((2, 4)), jnp.ones((2, 3)))


# ------------------------------------------------------------------------------- score


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_score_matches_numpy(temperature):
  cfg = SMALL
  model = _model(cfg)
  tokens, input_mask = _batch()
  mask = input_mask.copy()
  mask[:, :5] = 0  # score the last 4 positions only
  positions = np.maximum(np.cumsum(input_mask, 1) - 1, 0)
  ref_logits = _reference_logits(cfg, _params_np(model), tokens, positions, input_mask)
  ref_lp = _log_softmax(ref_logits / temperature)
  expected = np.zeros(tokens.shape)
  expected_ent = np.zeros(tokens.shape)
  for b in range(tokens.shape[0]):
    for t in range(1, tokens.shape[1]):
      if mask[b, t] and input_mask[b, :t].any():
        expected[b, t] = ref_lp[b, t - 1, tokens[b, t]]
        p = np.exp(ref_lp[b, t - 1])
        expected_ent[b, t] = -(p * ref_lp[b, t - 1]).sum()
  logp, ent = _score(model, tokens, input_mask, mask, temperature=temperature,
                     return_entropy=True)
  assert logp.dtype == jnp.float32 and logp.shape == tokens.shape
  np.testing.assert_allclose(logp, expected, atol=2e-4)
  np.testing.assert_allclose(ent, expected_ent, atol=2e-4)
  assert (np.asarray(logp)[mask == 0] == 0).all()


def test_score_chunked_equals_unchunked_and_grads():
  model = _model(SMALL_QWEN)
  tokens, input_mask = _batch(s=11)
  graphdef, state = nnx.split(model)

  def loss(state, chunk):
    lp, ent = score_fn(graphdef, state, jnp.asarray(tokens), jnp.asarray(input_mask),
                       jnp.asarray(input_mask), return_entropy=True, chunk_size=chunk)
    return jnp.sum(lp) + 0.1 * jnp.sum(ent), (lp, ent)

  (l1, (lp1, e1)), g1 = jax.jit(jax.value_and_grad(loss, has_aux=True),
                                static_argnums=1)(state, None)
  (l2, (lp2, e2)), g2 = jax.jit(jax.value_and_grad(loss, has_aux=True),
                                static_argnums=1)(state, 3)
  np.testing.assert_allclose(lp1, lp2, atol=1e-5)
  np.testing.assert_allclose(e1, e2, atol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(g1))


def test_logp_from_hidden_auto_chunks_when_over_budget():
  rng = np.random.RandomState(0)
  h = jnp.asarray(rng.randn(2, 7, 8), jnp.float32)
  w = jnp.asarray(rng.randn(50, 8), jnp.float32)
  y = jnp.asarray(rng.randint(0, 50, (2, 7)))
  z = np.einsum("btd,vd->btv", np.asarray(h, np.float64), np.asarray(w, np.float64))
  expected = np.take_along_axis(_log_softmax(z), np.asarray(y)[..., None], -1)[..., 0]
  # A budget of 2 rows x 2 positions x 50 x 4 bytes forces chunks of 2 positions.
  got = logp_from_hidden(h, w, y, max_logits_bytes=2 * 2 * 50 * 4)
  np.testing.assert_allclose(got, expected, atol=1e-4)


def test_doctests():
  for module in (config_lib, transformer_lib, scoring_lib):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, module.__name__
