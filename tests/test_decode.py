"""Tests for rljax.models.decode: prefill + one-token steps against the model's full forward."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rljax.models import Transformer, TransformerConfig, positions_from_mask
from rljax.models import decode

TINY = TransformerConfig(vocab_size=48, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                         head_dim=8, ffn_dim=64, rope_theta=500.0)
CONFIGS = {
    "llama-gqa": TINY,
    # Qwen2-like: q/k/v bias, tied embeddings; one kv head.
    "qwen-bias-tied": TINY.replace(attention_bias=True, tie_embeddings=True, num_kv_heads=1),
    "all-biases": TINY.replace(attention_bias=True, o_proj_bias=True, mlp_bias=True),
}
NEW = 3  # tokens fed by decode_step after the prompt


def _model(cfg):
  """A random model whose norm scales and biases are not their initial ones and zeros."""
  model = Transformer(cfg, rngs=nnx.Rngs(0))
  rng = np.random.RandomState(1)
  flat = nnx.to_flat_state(nnx.state(model))
  for path, var in flat:
    if path[-1] == "bias" or "norm" in str(path[-2]):
      value = np.asarray(var.get_value())
      var.set_value(jnp.asarray(value + 0.1 * rng.randn(*value.shape), value.dtype))
  nnx.update(model, nnx.from_flat_state(flat))
  return model


def _inputs(cfg):
  """Left-padded prompts of lengths 5, 2, 6 and 1 (width 6) and NEW further tokens per row."""
  prompt_mask = np.array([[0, 1, 1, 1, 1, 1],
                          [0, 0, 0, 0, 1, 1],
                          [1, 1, 1, 1, 1, 1],
                          [0, 0, 0, 0, 0, 1]], np.int32)
  rng = np.random.RandomState(2)
  prompt = np.where(prompt_mask == 1, rng.randint(1, cfg.vocab_size, prompt_mask.shape), 0)
  new = rng.randint(0, cfg.vocab_size, (prompt.shape[0], NEW))
  return prompt.astype(np.int32), prompt_mask, new.astype(np.int32)


def _decode_logits(graphdef, state, prompt, prompt_mask, new, grow_at=None):
  """float32 `[B, 1 + NEW, V]`: the prefill's logits, then those of each decode step.

  With `grow_at = i`, the cache first covers the prompt and i new tokens and is grown to its
  full length before step i (as the sampler's segments do).
  """
  model = nnx.merge(graphdef, state)
  cfg = model.config
  b, p = prompt.shape
  weights = decode.fuse_weights(model)
  rope = decode.rope_tables(cfg, p + NEW)
  full_len = p + NEW
  logits, caches = decode.prefill(cfg, weights, prompt, prompt_mask,
                                  full_len if grow_at is None else p + grow_at, rope)
  rope_t = tuple(t.T for t in rope)
  num_prompt = jnp.sum(prompt_mask, axis=-1)
  key_valid = jnp.concatenate([prompt_mask.astype(bool), jnp.ones((b, NEW), bool)], axis=1)
  out = [logits]
  for t in range(NEW):
    if t == grow_at:
      caches = decode.grow_caches(caches, full_len)
    step_logits, caches = decode.decode_step(cfg, weights, new[:, t], num_prompt + t, p + t,
                                             key_valid, caches, rope_t)
    out.append(step_logits.T)
  return jnp.stack(out, axis=1)


_decode_logits_jit = jax.jit(_decode_logits, static_argnames="grow_at")


def _full_forward_logits(model, prompt, prompt_mask, new):
  """The same logits from `Transformer.__call__` over the whole sequence, float32 `[B, 1+NEW, V]`."""
  tokens = jnp.concatenate([prompt, new], axis=1)
  mask = jnp.concatenate([prompt_mask, jnp.ones_like(new)], axis=1)
  logits = jax.jit(lambda g, s, t, m: nnx.merge(g, s)(t, positions_from_mask(m), m))(
      *nnx.split(model), tokens, mask)
  p = prompt.shape[1]
  return logits[:, p - 1:p + NEW]  # the last prompt position, then each new token's


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_decode_logits_equal_full_forward(name):
  model = _model(CONFIGS[name])
  prompt, prompt_mask, new = (jnp.asarray(a) for a in _inputs(model.config))
  expected = _full_forward_logits(model, prompt, prompt_mask, new)
  got = _decode_logits_jit(*nnx.split(model), prompt, prompt_mask, new)
  assert got.dtype == jnp.float32 and got.shape == expected.shape
  np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-5)


def test_decode_with_a_grown_cache():
  model = _model(CONFIGS["qwen-bias-tied"])
  prompt, prompt_mask, new = (jnp.asarray(a) for a in _inputs(model.config))
  expected = _full_forward_logits(model, prompt, prompt_mask, new)
  grown = _decode_logits_jit(*nnx.split(model), prompt, prompt_mask, new, grow_at=1)
  np.testing.assert_allclose(grown, expected, atol=2e-5, rtol=1e-5)


def test_decode_without_jit():
  model = _model(TINY.replace(num_layers=1))
  cfg = model.config
  prompt, prompt_mask, new = (jnp.asarray(a[:2]) for a in _inputs(cfg))
  expected = _full_forward_logits(model, prompt, prompt_mask, new)
  w, rope = decode.fuse_weights(model), decode.rope_tables(cfg, prompt.shape[1] + 1)
  logits, caches = decode.prefill(cfg, w, prompt, prompt_mask, prompt.shape[1] + 1, rope)
  np.testing.assert_allclose(logits, expected[:, 0], atol=2e-5, rtol=1e-5)
  key_valid = jnp.concatenate([prompt_mask.astype(bool), jnp.ones((2, 1), bool)], axis=1)
  step_logits, _ = decode.decode_step(cfg, w, new[:, 0], jnp.sum(prompt_mask, axis=-1),
                                      prompt.shape[1], key_valid, caches,
                                      tuple(t.T for t in rope))
  np.testing.assert_allclose(step_logits.T, expected[:, 1], atol=2e-5, rtol=1e-5)


def test_fuse_weights_concatenates_q_k_v():
  model = _model(CONFIGS["all-biases"])
  w = decode.fuse_weights(model)
  attn = model.layers[1].self_attn
  np.testing.assert_array_equal(
      w["layers"][1]["wqkv"],
      np.concatenate([attn.q_proj.weight[...], attn.k_proj.weight[...],
                      attn.v_proj.weight[...]], axis=0))
  np.testing.assert_array_equal(
      w["layers"][1]["bqkv"],
      np.concatenate([attn.q_proj.bias[...], attn.k_proj.bias[...], attn.v_proj.bias[...]]))
  assert decode.fuse_weights(_model(TINY))["layers"][0]["bqkv"] is None


def test_ablate_is_checked_and_leaves_parts_out():
  for bad in ("rope", ["rope"], ("rope", "mlp")):
    with pytest.raises(ValueError, match="ablate must be a tuple of names from"):
      decode.check_ablate(bad)
  decode.check_ablate(("attention", "rope"))
  model = _model(TINY)
  prompt, prompt_mask, _ = (jnp.asarray(a) for a in _inputs(model.config))
  w, rope = decode.fuse_weights(model), decode.rope_tables(TINY, prompt.shape[1])
  prefill = jax.jit(decode.prefill, static_argnums=(0, 4), static_argnames="ablate")
  full, _ = prefill(TINY, w, prompt, prompt_mask, prompt.shape[1], rope)
  for ablate in (("attention",), ("rope",)):
    other, _ = prefill(TINY, w, prompt, prompt_mask, prompt.shape[1], rope, ablate=ablate)
    assert not np.allclose(other, full), ablate


def test_doctests():
  result = doctest.testmod(decode, optionflags=doctest.ELLIPSIS)
  assert result.failed == 0
