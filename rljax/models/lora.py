"""Low-rank adapters (LoRA) on the linear projections of a `Transformer`, as a separate state.

LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685)
freezes each targeted weight `W [out, in]` and learns a rank-r update:

    W' = W + (alpha / r) * (A @ B)^T,     A [in, r],  B [r, out],  B = 0 at the start,

so the adapted policy starts as the base policy. `A` and `B` are the `lora_a` / `lora_b`
`nnx.LoRAParam`s of a Flax `nnx.LoRA` module per targeted projection (Flax's initialisers:
`A` variance-scaled normal, `B` zeros), held in an `nnx.State` of their own that mirrors the
model's paths (`layers/0/self_attn/q_proj/lora_a`). Only that state is trained, kept by the
optimizer and checkpointed; the base `nnx.Param` state stays frozen and is held once.

`merge(adapters, frozen, scale=...)` returns the model state with every targeted weight
replaced by `W'`. Scoring, the sampler's fused-weight decoder and the Hugging Face export all
run on that merged state, so none of them needs to know about adapters; under `jax.grad` the
gradient reaches `A` and `B` through the merge. The merged weights exist only inside the jitted
call that builds them. The cost of this form over `x W^T + s (x A) B`: each step forms the
full-size gradient of every targeted weight before reducing it to `A` and `B` (transient, not
stored), and in a bfloat16 model an update smaller than W's rounding step is not seen by the
forward pass until it grows (the adapters themselves are float32).

Example:
  >>> from flax import nnx
  >>> from rljax.models import Transformer, TransformerConfig
  >>> cfg = TransformerConfig(vocab_size=32, d_model=16, num_layers=1, num_heads=2,
  ...                         num_kv_heads=1, head_dim=8, ffn_dim=32)
  >>> model = Transformer(cfg, rngs=nnx.Rngs(0))
  >>> lcfg = LoraConfig(rank=2, alpha=4.0)
  >>> adapters = init_adapters(model, lcfg, seed=0)
  >>> sorted(adapters['layers'][0]['mlp'])
  ['down_proj', 'gate_proj', 'up_proj']
  >>> merged = merge(adapters, nnx.state(model, nnx.Param), scale=lcfg.scale)
  >>> bool((merged['layers'][0]['mlp']['up_proj']['weight'][...]
  ...       == model.layers[0].mlp.up_proj.weight[...]).all())  # B = 0: the base policy
  True
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rljax.models.transformer import Linear, Transformer

# The attention and MLP projections of every layer (the output projection `lm_head` is not
# adapted unless named).
DEFAULT_TARGETS = 'q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj'
_NAMES_RE = re.compile(r'\w+(,\w+)*')


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Which projections get adapters, and their rank and scale.

  Attributes:
    rank: r >= 1.
    alpha: the update is scaled by `alpha / rank`.
    targets: a comma-separated list of module names (`'q_proj,v_proj'`, matched against the
      last component of a module's path), or else a regular expression that must match a
      linear module's whole path (`r'layers/[01]/mlp/.*'`).
  """

  rank: int
  alpha: float = 8.0
  targets: str = DEFAULT_TARGETS

  def __post_init__(self):
    if not isinstance(self.rank, int) or self.rank < 1:
      raise ValueError(f'lora rank must be an integer >= 1, got {self.rank!r}')
    if not self.alpha > 0:
      raise ValueError(f'lora alpha must be > 0, got {self.alpha!r}')
    target_matcher(self.targets)

  @property
  def scale(self) -> float:
    return float(self.alpha) / self.rank


def target_matcher(targets: str):
  """`path -> bool` for `LoraConfig.targets`; raises ValueError on an invalid pattern."""
  targets = targets.strip()
  if not targets:
    raise ValueError('lora targets must name at least one module')
  if _NAMES_RE.fullmatch(targets.replace(' ', '')):
    names = set(targets.replace(' ', '').split(','))
    return lambda path: path.rsplit('/', 1)[-1] in names
  try:
    pattern = re.compile(targets)
  except re.error as e:
    raise ValueError(f'lora targets {targets!r} is neither a comma-separated list of module '
                     f'names nor a valid regular expression ({e})') from None
  return lambda path: pattern.fullmatch(path) is not None


def linear_modules(model: Transformer) -> dict[str, Linear]:
  """The model's `Linear` modules by '/'-joined path (`'layers/0/self_attn/q_proj'`)."""
  return {'/'.join(str(k) for k in path): m for path, m in nnx.iter_modules(model)
          if isinstance(m, Linear)}


def target_paths(model: Transformer, targets: str) -> list[str]:
  """The paths of the linear modules `targets` selects; ValueError if it selects none."""
  modules = linear_modules(model)
  match = target_matcher(targets)
  paths = sorted(p for p in modules if match(p))
  if not paths:
    names = sorted({p.rsplit('/', 1)[-1] for p in modules})
    raise ValueError(f'lora targets {targets!r} match no linear module; the modules are named '
                     f'{names} (paths like {sorted(modules)[0]!r})')
  return paths


def init_adapters(model: Transformer, config: LoraConfig, *, seed: int = 0) -> nnx.State:
  """Fresh adapters (`B = 0`) for the projections `config.targets` selects.

  Returns:
    An `nnx.State` of `nnx.LoRAParam`s (float32): for each targeted module path `p`,
    `p/lora_a [in, r]` and `p/lora_b [r, out]`.
  """
  flat = {}
  for i, path in enumerate(target_paths(model, config.targets)):
    out_features, in_features = linear_modules(model)[path].weight.shape
    lora = nnx.LoRA(in_features, config.rank, out_features, param_dtype=jnp.float32,
                    rngs=nnx.Rngs(jax.random.fold_in(jax.random.key(seed), i)))
    prefix = tuple(int(k) if k.isdigit() else k for k in path.split('/'))
    for name, var in nnx.to_flat_state(nnx.state(lora, nnx.LoRAParam)):
      flat[prefix + tuple(name)] = var
  return nnx.from_flat_state(flat)


def _path_str(path) -> str:
  parts = []
  for k in path:
    if isinstance(k, jax.tree_util.GetAttrKey):
      if k.name != 'value':  # the array inside an nnx.Variable
        parts.append(k.name)
    else:
      parts.append(str(getattr(k, 'key', getattr(k, 'idx', k))))
  return '/'.join(parts)


def _by_module(adapters) -> dict[str, dict[str, jax.Array]]:
  out: dict[str, dict[str, jax.Array]] = {}
  for path, x in jax.tree_util.tree_leaves_with_path(adapters):
    module, name = _path_str(path).rsplit('/', 1)
    out.setdefault(module, {})[name] = x
  return out


def merge(adapters: Any, frozen: Any, *, scale: float) -> Any:
  """The base state with `W + scale * (A @ B)^T` in place of each adapted weight.

  Args:
    adapters: the state of `init_adapters` (or a trained one of the same structure).
    frozen: the model's `nnx.Param` state (`nnx.split(model)[1]`).
    scale: `LoraConfig.scale`, alpha / r.

  Returns:
    A state of `frozen`'s structure and dtypes (the update is computed in float32 and cast to
    the weight's dtype).

  Raises:
    ValueError: if an adapter has no weight of matching shape in `frozen`.
  """
  by_module = _by_module(adapters)
  used = set()

  def apply(path, w):
    name = _path_str(path)
    module = name[:-len('/weight')] if name.endswith('/weight') else None
    if module not in by_module:
      return w
    ab = by_module[module]
    a, b = ab['lora_a'], ab['lora_b']
    if (a.shape[0], b.shape[1]) != (w.shape[1], w.shape[0]):
      raise ValueError(f'the adapter of {module} is for a [{b.shape[1]}, {a.shape[0]}] '
                       f'weight, the model has {list(w.shape)}')
    used.add(module)
    delta = jnp.matmul(a.astype(jnp.float32), b.astype(jnp.float32)).T
    return (w.astype(jnp.float32) + scale * delta).astype(w.dtype)

  merged = jax.tree_util.tree_map_with_path(apply, frozen)
  missing = sorted(set(by_module) - used)
  if missing:
    raise ValueError(f'adapters for modules the model does not have: {missing}')
  return merged


def num_params(tree: Any) -> int:
  """Number of scalars in a pytree of arrays."""
  return sum(int(x.size) for x in jax.tree.leaves(tree))
