"""Hugging Face safetensors import/export (`rljax.models.hf`).

Two groups of tests:
  * without torch: the tensor names against the documented Hugging Face layout (written out by
    hand here), exact round trips (single file and sharded), dtype casts, and the strict
    checks (missing, unexpected, misshapen tensors);
  * with torch + transformers (skipped, with the reason, where they are absent): tiny random
    `LlamaForCausalLM` / `Qwen2ForCausalLM` saved with `save_pretrained`, loaded into rljax, and
    compared logit for logit (float32, 1e-4) on a left-padded batch with an attention mask and on
    an unpadded batch; then exported with `to_hf`, reloaded by `AutoModelForCausalLM` and compared
    again.
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from rljax.models import Transformer, TransformerConfig
from rljax.models import hf

ATOL = 1e-4  # float32 logits of the same weights agree to this.


# ------------------------------------------------------------------------------- helpers


def _config(**overrides):
  kw = dict(vocab_size=48, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
            ffn_dim=40)
  kw.update(overrides)
  return TransformerConfig(**kw)


def _random_model(config, seed=0):
  """A Transformer whose every parameter (norm scales and zero-initialised biases included) is
  random, so that a mix-up of any two tensors would show. Built from NumPy draws on the
  abstract model (no XLA compilation, which keeps these tests fast)."""
  rng = np.random.RandomState(seed)
  graphdef, state = nnx.split(hf._abstract_model(config))
  pure = jax.tree.map(
      lambda x: jnp.asarray(rng.standard_normal(x.shape).astype(np.float32).astype(x.dtype)),
      nnx.to_pure_dict(state))
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)


def _params(model):
  return {hf._hf_name(p): np.asarray(v)
          for p, v in hf._flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param)))}


def _documented_names(num_layers, *, tied, qkv_bias, o_bias=False, mlp_bias=False):
  """The tensor names of a Hugging Face Llama/Qwen2 checkpoint, spelled out independently."""
  names = {"model.embed_tokens.weight", "model.norm.weight"}
  if not tied:
    names.add("lm_head.weight")
  for i in range(num_layers):
    p = f"model.layers.{i}."
    names |= {p + "input_layernorm.weight", p + "post_attention_layernorm.weight"}
    for proj in ("q_proj", "k_proj", "v_proj"):
      names.add(p + f"self_attn.{proj}.weight")
      if qkv_bias:
        names.add(p + f"self_attn.{proj}.bias")
    names.add(p + "self_attn.o_proj.weight")
    if o_bias:
      names.add(p + "self_attn.o_proj.bias")
    for proj in ("gate_proj", "up_proj", "down_proj"):
      names.add(p + f"mlp.{proj}.weight")
      if mlp_bias:
        names.add(p + f"mlp.{proj}.bias")
  return names


# ------------------------------------------------------------------- torch-free checks


def test_names_and_shapes_follow_the_hugging_face_layout():
  c = _config(attention_bias=True, tie_embeddings=True)
  shapes = {k: s for k, (s, _) in hf.hf_param_shapes(c).items()}
  assert set(shapes) == _documented_names(2, tied=True, qkv_bias=True)
  assert shapes["model.embed_tokens.weight"] == (48, 32)
  assert shapes["model.layers.1.self_attn.q_proj.weight"] == (4 * 8, 32)  # [out, in]
  assert shapes["model.layers.1.self_attn.k_proj.weight"] == (2 * 8, 32)
  assert shapes["model.layers.1.self_attn.k_proj.bias"] == (2 * 8,)
  assert shapes["model.layers.0.self_attn.o_proj.weight"] == (32, 4 * 8)
  assert shapes["model.layers.0.mlp.gate_proj.weight"] == (40, 32)
  assert shapes["model.layers.0.mlp.down_proj.weight"] == (32, 40)
  untied = _config(o_proj_bias=True, mlp_bias=True, attention_bias=True)
  assert set(hf.hf_param_shapes(untied)) == _documented_names(
      2, tied=False, qkv_bias=True, o_bias=True, mlp_bias=True)


@pytest.mark.parametrize("tied,bias,shard", [(False, False, None), (True, True, 4096)])
def test_round_trip_is_exact(tmp_path, tied, bias, shard):
  config = _config(tie_embeddings=tied, attention_bias=bias)
  model = _random_model(config)
  hf.to_hf(model, tmp_path, max_shard_bytes=shard)
  files = sorted(os.listdir(tmp_path))
  if shard:
    index = json.loads((tmp_path / hf.WEIGHTS_INDEX_NAME).read_text())
    shard_files = sorted(set(index["weight_map"].values()))
    assert len(shard_files) > 1 and all(f in files for f in shard_files)
    assert hf.WEIGHTS_NAME not in files
  else:
    assert hf.WEIGHTS_NAME in files
  hf_config = json.loads((tmp_path / "config.json").read_text())
  assert hf_config["model_type"] == ("qwen2" if bias else "llama")
  assert hf_config["tie_word_embeddings"] is tied
  stored = hf.load_hf_tensors(tmp_path)
  assert set(stored) == _documented_names(2, tied=tied, qkv_bias=bias)

  loaded = hf.from_hf(tmp_path)
  assert loaded.config == config
  want, got = _params(model), _params(loaded)
  assert set(want) == set(got)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    np.testing.assert_array_equal(stored[name], want[name], err_msg=name)


def test_dtype_cast_on_load(tmp_path):
  model = _random_model(_config())
  hf.to_hf(model, tmp_path)
  loaded = hf.from_hf(tmp_path, dtype=jnp.bfloat16)
  assert loaded.config.param_dtype == "bfloat16"
  want = _params(model)
  for name, value in _params(loaded).items():
    assert value.dtype == jnp.bfloat16, name
    # NumPy's (ml_dtypes) round-to-nearest-even cast, computed independently of the loader.
    np.testing.assert_array_equal(value, want[name].astype(ml_dtypes.bfloat16), err_msg=name)
  # A bfloat16 model writes bfloat16 tensors, which load back unchanged.
  out = tmp_path / "bf16"
  hf.to_hf(loaded, out)
  assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
  stored = hf.load_hf_tensors(out)
  assert stored["model.norm.weight"].dtype == ml_dtypes.bfloat16
  again = hf.from_hf(out)
  for name, value in _params(again).items():
    np.testing.assert_array_equal(value, _params(loaded)[name], err_msg=name)


def _write(tmp_path, config, tensors, **config_extra):
  tmp_path.mkdir(parents=True, exist_ok=True)
  hf_config = dict(config.to_hf_config(), **config_extra)
  (tmp_path / "config.json").write_text(json.dumps(hf_config))
  save_file(tensors, str(tmp_path / hf.WEIGHTS_NAME), metadata={"format": "pt"})


def test_strict_loading_names_the_tensor_at_fault(tmp_path):
  config = _config()
  good = hf.to_hf_tensors(_random_model(config))

  missing = dict(good)
  del missing["model.layers.1.mlp.up_proj.weight"]
  _write(tmp_path / "missing", config, missing)
  with pytest.raises(ValueError, match=r"missing tensors.*model\.layers\.1\.mlp\.up_proj\.weight "
                                       r"\(40, 32\)"):
    hf.from_hf(tmp_path / "missing")

  extra = dict(good, **{"model.layers.0.self_attn.q_norm.weight": np.ones(8, np.float32)})
  _write(tmp_path / "extra", config, extra)
  with pytest.raises(ValueError, match=r"unexpected tensors.*self_attn\.q_norm\.weight \(8,\)"):
    hf.from_hf(tmp_path / "extra")

  wrong = dict(good, **{"model.layers.0.self_attn.k_proj.weight": np.zeros((32, 32), np.float32)})
  _write(tmp_path / "wrong", config, wrong)
  with pytest.raises(ValueError, match=r"k_proj\.weight: checkpoint \(32, 32\), model \(16, 32\)"):
    hf.from_hf(tmp_path / "wrong")

  no_head = dict(good)
  del no_head["lm_head.weight"]
  _write(tmp_path / "no_head", config, no_head)
  with pytest.raises(ValueError, match=r"lm_head\.weight is absent"):
    hf.from_hf(tmp_path / "no_head")

  with pytest.raises(FileNotFoundError):
    hf.from_hf(tmp_path / "does_not_exist")


def test_tied_checkpoint_with_stored_head_and_rotary_buffers(tmp_path):
  config = _config(tie_embeddings=True)
  tensors = hf.to_hf_tensors(_random_model(config))
  embed = tensors["model.embed_tokens.weight"]
  inv_freq = {"model.layers.0.self_attn.rotary_emb.inv_freq": np.ones(4, np.float32)}
  _write(tmp_path / "same", config, dict(tensors, **inv_freq, **{"lm_head.weight": embed.copy()}))
  loaded = hf.from_hf(tmp_path / "same")
  np.testing.assert_array_equal(np.asarray(loaded.embed_tokens.weight[...]), embed)

  _write(tmp_path / "differs", config, dict(tensors, **{"lm_head.weight": embed + 1.0}))
  with pytest.raises(ValueError, match="tie_word_embeddings=true but"):
    hf.from_hf(tmp_path / "differs")


def test_config_reading():
  base = dict(model_type="qwen2", vocab_size=100, hidden_size=64, intermediate_size=96,
              num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
              rms_norm_eps=1e-6, tie_word_embeddings=True, max_position_embeddings=128)
  legacy = hf.config_from_hf(dict(base, rope_theta=1e6, torch_dtype="bfloat16"))
  newer = hf.config_from_hf(
      dict(base, rope_parameters={"rope_theta": 1e6, "rope_type": "default"}, dtype="bfloat16"))
  assert legacy == newer
  assert (legacy.head_dim, legacy.num_kv_heads, legacy.rope_theta) == (16, 2, 1e6)
  assert legacy.attention_bias and not legacy.o_proj_bias and legacy.tie_embeddings
  assert legacy.param_dtype == "bfloat16"
  with pytest.raises(ValueError, match="hidden_act"):
    hf.config_from_hf(dict(base, hidden_act="gelu"))
  with pytest.raises(ValueError):
    hf.to_hf(_random_model(_config()), "/nonexistent-unused", model_type="qwen2")


# ------------------------------------------------------------ parity with transformers

# name -> (transformers class name, config kwargs). GQA everywhere; llama has head_dim != D/H,
# untied embeddings and Llama's attention/MLP biases in the second variant; qwen2 is tied, with
# its q/k/v biases.
_HF_CASES = {
    "llama": ("LlamaForCausalLM", dict(
        vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=24, rope_theta=500000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=False, max_position_embeddings=64)),
    "llama_bias": ("LlamaForCausalLM", dict(
        vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, rope_theta=10000.0, rms_norm_eps=1e-6,
        attention_bias=True, mlp_bias=True, tie_word_embeddings=True,
        max_position_embeddings=64)),
    "qwen2": ("Qwen2ForCausalLM", dict(
        vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, rope_theta=1000000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=True, max_position_embeddings=64)),
}


def _torch_modules():
  torch = pytest.importorskip(
      "torch", reason="torch is not installed (pip install 'rljax[test]' runs these)")
  transformers = pytest.importorskip(
      "transformers", reason="transformers is not installed (pip install 'rljax[test]')")
  return torch, transformers


def _batches(vocab_size):
  """A left-padded batch with its mask, and an unpadded one, int64 [3, 11]."""
  rng = np.random.RandomState(0)
  lengths = np.array([11, 7, 2])
  tokens = rng.randint(1, vocab_size, size=(3, 11))
  mask = (np.arange(11)[None, :] >= (11 - lengths)[:, None]).astype(np.int64)
  tokens = tokens * mask  # pad id 0 on the left
  full = rng.randint(0, vocab_size, size=(3, 11))
  return (tokens, mask), full


def _hf_logits(torch, model, tokens, mask=None):
  with torch.no_grad():
    if mask is None:
      return model(input_ids=torch.tensor(tokens)).logits.numpy()
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)  # left padding keeps positions
    return model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                 position_ids=torch.tensor(positions)).logits.numpy()


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, tokens, positions, mask):
  return nnx.merge(graphdef, state)(tokens, positions, mask)


def _rljax_logits(model, tokens, mask=None):
  """rljax logits; one compilation per model config (both batches have one shape)."""
  if mask is None:  # unpadded: every token real, positions 0..S-1
    mask = np.ones_like(tokens)
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  graphdef, state = nnx.split(model)
  return np.asarray(_forward(graphdef, state, jnp.asarray(tokens, jnp.int32),
                             jnp.asarray(positions, jnp.int32), jnp.asarray(mask, jnp.int32)))


def _assert_logits_close(got, want, mask=None, what=""):
  assert got.shape == want.shape and got.dtype == np.float32
  if mask is not None:  # logits at pad positions are not defined the same way; compare real ones
    got, want = got[mask.astype(bool)], want[mask.astype(bool)]
  err = np.abs(got - want).max()
  assert err <= ATOL, f"{what}: max |logit diff| {err:.2e} > {ATOL}"


@pytest.mark.parametrize("case", sorted(_HF_CASES))
def test_parity_with_transformers(tmp_path, monkeypatch, case):
  torch, transformers = _torch_modules()
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  cls_name, kwargs = _HF_CASES[case]
  model_type = "qwen2" if cls_name.startswith("Qwen2") else "llama"
  hf_config = transformers.AutoConfig.for_model(model_type, **kwargs)
  torch.manual_seed(0)
  reference = getattr(transformers, cls_name)(hf_config).eval()
  # Hugging Face initialises norms to one and biases to zero; randomise every tensor so that
  # a misplaced one changes the logits (weights ~ N(0, 1/fan_in) keep activations O(1)).
  with torch.no_grad():
    for name, p in reference.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      elif p.ndim == 1:
        p.copy_(0.2 * torch.randn_like(p))
      else:
        p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
  src = tmp_path / "hf"
  reference.save_pretrained(src)

  model = hf.from_hf(src)
  c = model.config
  assert (c.num_heads, c.num_kv_heads, c.head_dim) == (
      kwargs["num_attention_heads"], kwargs["num_key_value_heads"],
      kwargs.get("head_dim", kwargs["hidden_size"] // kwargs["num_attention_heads"]))
  assert c.tie_embeddings == kwargs["tie_word_embeddings"]
  assert c.rope_theta == kwargs["rope_theta"] and c.rms_norm_eps == kwargs["rms_norm_eps"]
  assert c.param_dtype == "float32"

  (padded, mask), full = _batches(kwargs["vocab_size"])
  want_padded = _hf_logits(torch, reference, padded, mask)
  want_full = _hf_logits(torch, reference, full)
  _assert_logits_close(_rljax_logits(model, padded, mask), want_padded, mask, "padded, import")
  _assert_logits_close(_rljax_logits(model, full), want_full, None, "unpadded, import")

  out = tmp_path / "export"
  hf.to_hf(model, out)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  assert type(reloaded).__name__ == cls_name
  ref_sd, new_sd = reference.state_dict(), reloaded.state_dict()
  assert set(ref_sd) == set(new_sd)
  for name, value in ref_sd.items():  # float32 all the way: the round trip is bit-exact
    assert torch.equal(new_sd[name], value), name
  _assert_logits_close(_hf_logits(torch, reloaded, padded, mask), want_padded, mask,
                       "padded, export")
  _assert_logits_close(_hf_logits(torch, reloaded, full), want_full, None, "unpadded, export")
  _assert_logits_close(_rljax_logits(model, full), _hf_logits(torch, reloaded, full), None,
                       "unpadded, rljax vs reloaded")
