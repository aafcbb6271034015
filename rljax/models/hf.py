"""Hugging Face checkpoint import and export through safetensors (numpy backend, no torch).

A Hugging Face `LlamaForCausalLM` / `Qwen2ForCausalLM` directory holds `config.json` and either
`model.safetensors` or shards `model-0000k-of-0000n.safetensors` listed in
`model.safetensors.index.json` (`{"weight_map": {tensor name: shard file}}`). rljax stores every
parameter under the Hugging Face name without its `model.` prefix and in the same layout
(linear weights `[out, in]`), so the conversion is a rename and a dtype cast:

| Hugging Face tensor | rljax `nnx.state` path | shape |
| --- | --- | --- |
| `model.embed_tokens.weight` | `embed_tokens.weight` | `[V, D]` |
| `model.layers.{i}.input_layernorm.weight` | `layers.{i}.input_layernorm.weight` | `[D]` |
| `model.layers.{i}.self_attn.{q,k,v}_proj.{weight,bias}` | `layers.{i}.self_attn.{q,k,v}_proj.*` | `[N*Dh, D]`, `[N*Dh]` |
| `model.layers.{i}.self_attn.o_proj.weight` (`.bias`) | `layers.{i}.self_attn.o_proj.*` | `[D, H*Dh]` |
| `model.layers.{i}.post_attention_layernorm.weight` | `layers.{i}.post_attention_layernorm.weight` | `[D]` |
| `model.layers.{i}.mlp.{gate,up}_proj.weight` | `layers.{i}.mlp.{gate,up}_proj.weight` | `[F, D]` |
| `model.layers.{i}.mlp.down_proj.weight` | `layers.{i}.mlp.down_proj.weight` | `[D, F]` |
| `model.norm.weight` | `norm.weight` | `[D]` |
| `lm_head.weight` (absent when `tie_word_embeddings`) | `lm_head.weight` | `[V, D]` |

(N is `num_attention_heads` H for q and `num_key_value_heads` K for k and v.) The q and k
rows are used as stored: both Hugging Face and rljax apply rotary embeddings in the
`rotate_half` convention, so no permutation of the head dimension is needed.

Loading is strict: every tensor in the checkpoint must map to a parameter of the model built
from `config.json` with the same shape, and every parameter must be filled; otherwise a
`ValueError` names the tensors at fault. The only tensors skipped are rotary-frequency buffers
(`*.rotary_emb.inv_freq`) that old checkpoints saved, which are recomputed from the config, and a
redundant `lm_head.weight` in a tied checkpoint when it equals `model.embed_tokens.weight`.

Example (a round trip through a temporary directory):

  >>> import tempfile
  >>> import numpy as np
  >>> from flax import nnx
  >>> from rljax.models import Transformer, TransformerConfig
  >>> from rljax.models.hf import from_hf, to_hf
  >>> cfg = TransformerConfig(vocab_size=32, d_model=16, num_layers=1, num_heads=2,
  ...                         num_kv_heads=1, head_dim=8, ffn_dim=32)
  >>> model = Transformer(cfg, rngs=nnx.Rngs(0))
  >>> with tempfile.TemporaryDirectory() as d:
  ...   to_hf(model, d)
  ...   loaded = from_hf(d)
  >>> bool(np.array_equal(loaded.lm_head.weight[...], model.lm_head.weight[...]))
  True
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Iterator, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from rljax.models.config import TransformerConfig
from rljax.models.transformer import Transformer

PathLike = Union[str, os.PathLike]

__all__ = [
    "config_from_hf",
    "from_hf",
    "hf_param_shapes",
    "load_hf_tensors",
    "state_from_hf_tensors",
    "to_hf",
    "to_hf_tensors",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"

# Checkpoint tensors that are not parameters and are recomputed from the config.
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)
_SUPPORTED_ACTIVATIONS = ("silu", "swish")
_SHARD_RE = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


# ------------------------------------------------------------------------------ names


def _hf_name(path: tuple[Any, ...]) -> str:
  """Hugging Face tensor name of an rljax state path, e.g. ('layers', 0, 'mlp', ...)."""
  name = ".".join(str(k) for k in path)
  return name if path[0] == "lm_head" else "model." + name


def _flatten(tree: Mapping[Any, Any], prefix: tuple[Any, ...] = ()
             ) -> Iterator[tuple[tuple[Any, ...], Any]]:
  for key, value in tree.items():
    if isinstance(value, Mapping):
      yield from _flatten(value, prefix + (key,))
    else:
      yield prefix + (key,), value


def _abstract_model(config: TransformerConfig) -> Transformer:
  """The model's structure with `jax.ShapeDtypeStruct` leaves (no parameter is initialised)."""
  return nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))


def hf_param_shapes(config: TransformerConfig) -> dict[str, tuple[tuple[int, ...], Any]]:
  """The Hugging Face tensors a model of `config` consists of.

  Args:
    config: the rljax model configuration.

  Returns:
    `{hf_name: (shape, dtype)}` for every parameter, in the layout of the module docstring
    (no `lm_head.weight` when `config.tie_embeddings`).
  """
  _, state = nnx.split(_abstract_model(config))
  return {_hf_name(path): (tuple(leaf.shape), leaf.dtype)
          for path, leaf in _flatten(nnx.to_pure_dict(state))}


# ----------------------------------------------------------------------------- config


def _read_json(path: PathLike) -> dict[str, Any]:
  with open(path) as f:
    return json.load(f)


def config_from_hf(config: Union[Mapping[str, Any], PathLike], **overrides
                   ) -> TransformerConfig:
  """Reads a Hugging Face Llama/Qwen2 `config.json` into a `TransformerConfig`.

  A thin check around `TransformerConfig.from_hf_config`, which maps the fields (see
  `rljax.models.config`); this also rejects activations other than SiLU, since the rljax MLP is
  SwiGLU.

  Args:
    config: the JSON dict, a path to `config.json`, or a checkpoint directory holding one.
    **overrides: `TransformerConfig` fields to set after conversion (e.g. `param_dtype`).

  Returns:
    The `TransformerConfig`.

  Raises:
    ValueError: for an unsupported model type, activation or attention variant.
    FileNotFoundError: if the path holds no `config.json`.
  """
  if not isinstance(config, Mapping):
    path = os.fspath(config)
    if os.path.isdir(path):
      path = os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"No Hugging Face config at {path!r}.")
    config = _read_json(path)
  act = config.get("hidden_act", "silu")
  if act not in _SUPPORTED_ACTIVATIONS:
    raise ValueError(
        f"hidden_act must be one of {list(_SUPPORTED_ACTIVATIONS)} (SwiGLU MLP), got {act!r}.")
  return TransformerConfig.from_hf_config(config, **overrides)


# ---------------------------------------------------------------------------- reading


def _weight_files(path: str) -> dict[str, str]:
  """`{tensor name: safetensors file}` of a checkpoint directory (single file or sharded)."""
  index = os.path.join(path, WEIGHTS_INDEX_NAME)
  single = os.path.join(path, WEIGHTS_NAME)
  if os.path.isfile(index):
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, Mapping) or not weight_map:
      raise ValueError(f"{index} has no 'weight_map'.")
    files = {name: os.path.join(path, fname) for name, fname in weight_map.items()}
    for fname in sorted(set(files.values())):
      if not os.path.isfile(fname):
        raise FileNotFoundError(f"Shard {fname!r} named in {index} does not exist.")
    return files
  if os.path.isfile(single):
    with safe_open(single, framework="np") as f:
      return {name: single for name in f.keys()}
  raise FileNotFoundError(
      f"No {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME} in {path!r} (only safetensors checkpoints "
      "are read; convert a pytorch_model.bin with transformers' save_pretrained first).")


def load_hf_tensors(path: PathLike) -> dict[str, np.ndarray]:
  """Reads every tensor of a safetensors checkpoint directory into NumPy arrays.

  Args:
    path: a directory with `model.safetensors`, or with `model.safetensors.index.json` and
      the shards it lists.

  Returns:
    `{tensor name: np.ndarray}` in the stored dtype (bfloat16 as `ml_dtypes.bfloat16`).
  """
  by_file: dict[str, list[str]] = {}
  for name, fname in _weight_files(os.fspath(path)).items():
    by_file.setdefault(fname, []).append(name)
  tensors = {}
  for fname, names in by_file.items():
    with safe_open(fname, framework="np") as f:
      present = set(f.keys())
      for name in names:
        if name not in present:
          raise ValueError(f"Tensor {name!r} is listed in the index but absent from {fname!r}.")
        tensors[name] = f.get_tensor(name)
  return tensors


def state_from_hf_tensors(config: TransformerConfig, tensors: Mapping[str, np.ndarray]
                          ) -> dict[Any, Any]:
  """Maps Hugging Face tensors to the nested pure dict of `nnx.state(Transformer(config))`.

  Args:
    config: the configuration of the model to fill; its `param_dtype` is the target dtype.
    tensors: `{hf name: array}` as read by `load_hf_tensors`.

  Returns:
    A nested dict (layer indices as int keys) of `jax.Array` in `config.dtype`, ready for
    `nnx.replace_by_pure_dict`.

  Raises:
    ValueError: naming every missing tensor, unexpected tensor, or shape mismatch.
  """
  _, abstract = nnx.split(_abstract_model(config))
  pure = nnx.to_pure_dict(abstract)
  remaining = {k: v for k, v in tensors.items() if not k.endswith(_IGNORED_SUFFIXES)}
  missing, wrong_shape = [], []
  filled: dict[tuple[Any, ...], jax.Array] = {}
  for path, leaf in _flatten(pure):
    name = _hf_name(path)
    if name not in remaining:
      missing.append(f"{name} {tuple(leaf.shape)}")
      continue
    array = remaining.pop(name)
    if tuple(array.shape) != tuple(leaf.shape):
      wrong_shape.append(f"{name}: checkpoint {tuple(array.shape)}, model {tuple(leaf.shape)}")
      continue
    filled[path] = array
  if config.tie_embeddings and "lm_head.weight" in remaining:
    # Some tied checkpoints store the output matrix too; accept it only if it is the embedding.
    head = remaining.pop("lm_head.weight")
    embed = tensors.get("model.embed_tokens.weight")
    if embed is None or head.shape != embed.shape or not np.array_equal(head, embed):
      raise ValueError(
          "config.json has tie_word_embeddings=true but the checkpoint's lm_head.weight "
          f"{tuple(head.shape)} differs from model.embed_tokens.weight; load it untied with "
          "from_hf(path, tie_embeddings=False).")
  problems = []
  if missing:
    hint = (" (lm_head.weight is absent: is the checkpoint tied? config.json says "
            "tie_word_embeddings=false)") if any(m.startswith("lm_head.") for m in missing) else ""
    problems.append(f"missing tensors{hint}: " + ", ".join(missing))
  if wrong_shape:
    problems.append("shape mismatches: " + "; ".join(wrong_shape))
  if remaining:
    problems.append("unexpected tensors (no rljax parameter): " + ", ".join(
        f"{k} {tuple(v.shape)}" for k, v in sorted(remaining.items())))
  if problems:
    raise ValueError("Checkpoint does not match the model built from its config: "
                     + " | ".join(problems))
  dtype = config.dtype
  for path, array in filled.items():
    node = pure
    for key in path[:-1]:
      node = node[key]
    node[path[-1]] = jnp.asarray(np.asarray(array).astype(dtype, copy=False))
  return pure


def from_hf(path: PathLike, *, dtype: Any = None, **config_overrides) -> Transformer:
  """Builds an rljax `Transformer` from a Hugging Face Llama/Qwen2 safetensors checkpoint.

  Reads `config.json` (see `config_from_hf`) and the safetensors weights with the NumPy
  backend (no torch), checks that the checkpoint and the model agree tensor for tensor, and
  casts the weights to the parameter dtype. No parameter is randomly initialised first.

  Args:
    path: a Hugging Face checkpoint directory (`config.json` plus `model.safetensors` or a
      sharded `model.safetensors.index.json`).
    dtype: parameter dtype (`jnp.float32`, `jnp.bfloat16`, or their names); by default the
      `torch_dtype`/`dtype` recorded in `config.json` (float32 if absent).
    **config_overrides: other `TransformerConfig` fields to override (e.g. `max_seq_len`).

  Returns:
    The `Transformer`, parameters on JAX's default device.

  Raises:
    ValueError: if a tensor is missing, unexpected, or has the wrong shape (the message names
      each one), or the config describes an unsupported architecture.
  """
  path = os.fspath(path)
  if dtype is not None:
    config_overrides["param_dtype"] = jnp.dtype(dtype).name
  config = config_from_hf(path, **config_overrides)
  pure = state_from_hf_tensors(config, load_hf_tensors(path))
  graphdef, state = nnx.split(_abstract_model(config))
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)


# ---------------------------------------------------------------------------- writing


def to_hf_tensors(model: Transformer) -> dict[str, np.ndarray]:
  """The model's parameters as `{Hugging Face name: np.ndarray}` (stored dtype, `[out, in]`)."""
  if not isinstance(model, Transformer):
    raise TypeError(f"model must be an rljax Transformer, got {type(model).__name__}.")
  pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  return {_hf_name(path): np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
          for path, leaf in _flatten(pure)}


def _shards(tensors: Mapping[str, np.ndarray], max_shard_bytes: Optional[int]
            ) -> list[dict[str, np.ndarray]]:
  if max_shard_bytes is None:
    return [dict(tensors)]
  if max_shard_bytes <= 0:
    raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}.")
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, array in tensors.items():
    if shards[-1] and size + array.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = array
    size += array.nbytes
  return shards


def to_hf(model: Transformer, path: PathLike, *, model_type: Optional[str] = None,
          max_shard_bytes: Optional[int] = None) -> None:
  """Writes a Hugging Face checkpoint directory that `AutoModelForCausalLM` can load.

  Writes `config.json` (`model_type` and `architectures` for `LlamaForCausalLM` or
  `Qwen2ForCausalLM`, from `TransformerConfig.to_hf_config`) and the weights as
  `model.safetensors` (metadata `{"format": "pt"}`), or as shards plus
  `model.safetensors.index.json` when `max_shard_bytes` is given. A tied model writes no
  `lm_head.weight`, as Hugging Face does. Parameters keep their dtype.

  Args:
    model: the rljax `Transformer`.
    path: output directory (created if needed; existing files of the same names are replaced).
    model_type: 'llama' or 'qwen2'; by default 'qwen2' when the model has q/k/v biases only
      and 'llama' otherwise.
    max_shard_bytes: if set, split the weights into files of at most this many bytes (a
      single tensor larger than this gets a file of its own).

  Raises:
    ValueError: if the model cannot be expressed as `model_type`.
  """
  if not isinstance(model, Transformer):
    raise TypeError(f"model must be an rljax Transformer, got {type(model).__name__}.")
  hf_config = model.config.to_hf_config(model_type)
  tensors = to_hf_tensors(model)
  path = os.fspath(path)
  os.makedirs(path, exist_ok=True)
  for stale in os.listdir(path):  # weights of an earlier save would shadow or confuse these
    if stale in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME) or _SHARD_RE.fullmatch(stale):
      os.remove(os.path.join(path, stale))
  shards = _shards(tensors, max_shard_bytes)
  metadata = {"format": "pt"}
  if len(shards) == 1:
    save_file(shards[0], os.path.join(path, WEIGHTS_NAME), metadata=metadata)
  else:
    weight_map = {}
    for i, shard in enumerate(shards):
      fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
      save_file(shard, os.path.join(path, fname), metadata=metadata)
      weight_map.update({name: fname for name in shard})
    index = {"metadata": {"total_size": int(sum(a.nbytes for a in tensors.values()))},
             "weight_map": weight_map}
    with open(os.path.join(path, WEIGHTS_INDEX_NAME), "w") as f:
      json.dump(index, f, indent=2, sort_keys=True)
  with open(os.path.join(path, CONFIG_NAME), "w") as f:
    json.dump(hf_config, f, indent=2, sort_keys=True)
