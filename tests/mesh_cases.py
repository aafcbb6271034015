"""Shared fixtures of the mesh tests: the meshes, a tiny model and an RL batch of host arrays.

The meshes are data x fsdp x tensor on the 8 host CPU devices that tests/conftest.py sets up.
The batch's tokens are random ids (no sampler run), its behaviour log-probs random negative
numbers near log(1/V) (the update recomputes the proximal anchor with the trainer), its
completions of varied lengths after left-padded prompts, its rewards 0/1 with mixed groups.
"""

import jax
import numpy as np
from flax import nnx

from rljax.models import Transformer, TransformerConfig
from rljax.sampling.rollout import Rollout
from rljax.train import mesh as mesh_lib
from rljax.train.batch import TrainBatch

# name -> (data, fsdp, tensor); '1' is the one-device reference.
MESHES = {
    '1': (1, 1, 1), '8x1x1': (8, 1, 1), '2x4x1': (2, 4, 1), '2x2x2': (2, 2, 2),
    '1x2x4': (1, 2, 4), '1x1x8': (1, 1, 8),
}
NUM_PROMPTS, G, P, N = 8, 2, 4, 8   # B = 16 rows, L = 12 columns
VOCAB = 64

# `Lowered.compile(compiler_options=...)` of the tests: the same program, compiled faster.
FAST_COMPILE = {'xla_backend_optimization_level': 0}

CONFIG = TransformerConfig(vocab_size=VOCAB, d_model=32, num_layers=2, num_heads=4,
                           num_kv_heads=2, head_dim=8, ffn_dim=64, max_seq_len=32)


def mesh(name: str) -> jax.sharding.Mesh:
  data, fsdp, tensor = MESHES[name]
  return mesh_lib.make_mesh(data, fsdp, tensor)


def split_model(config: TransformerConfig = CONFIG, seed: int = 0):
  """`(graphdef, params)` of a fresh model, params as host NumPy arrays."""
  graphdef, params = nnx.split(Transformer(config, rngs=nnx.Rngs(seed)))
  return graphdef, jax.tree.map(np.asarray, params)


def host_batch(seed: int = 0, shared_prompts: bool = False) -> TrainBatch:
  """An RL batch of B = NUM_PROMPTS * G rows (host arrays; see the module docstring).

  With `shared_prompts`, the G rows of each group have the same prompt (tokens and padding),
  as the sampler's completions of one prompt do; otherwise every row has its own.
  """
  rng = np.random.default_rng(seed)
  b, length = NUM_PROMPTS * G, P + N
  tokens = rng.integers(3, VOCAB, size=(b, length)).astype(np.int32)
  pad = rng.integers(0, P - 1, size=b)                 # left padding of each prompt
  if shared_prompts:
    first = np.repeat(np.arange(0, b, G), G)
    tokens[:, :P], pad = tokens[first, :P], pad[first]
  lengths = rng.integers(1, N + 1, size=b)             # completion lengths
  cols = np.arange(length)[None]
  prompt_mask = ((cols >= pad[:, None]) & (cols < P)).astype(np.int32)
  completion_mask = ((cols >= P) & (cols < P + lengths[:, None])).astype(np.int32)
  tokens = np.where(prompt_mask + completion_mask > 0, tokens, 0)
  logp = (-np.log(VOCAB) + 0.3 * rng.standard_normal((b, length))).astype(np.float32)
  logp = logp * completion_mask
  rewards = rng.integers(0, 2, size=b).astype(np.float32)
  rewards[:2] = (1.0, 0.0)                             # at least one mixed group
  rollout = Rollout(tokens=tokens, prompt_mask=prompt_mask, completion_mask=completion_mask,
                    behavior_logp=logp, untruncated_logp=logp, lengths=lengths.astype(np.int32),
                    stopped=lengths < N)
  return jax.tree.map(np.asarray, TrainBatch.from_sample(rollout, rewards, group_size=G))


def place_params(params, m: jax.sharding.Mesh):
  """`params` on mesh `m` with the default partition rules (a fresh copy of every leaf)."""
  return jax.device_put(jax.tree.map(np.array, params), mesh_lib.param_shardings(params, m))


def per_device_bytes(tree) -> tuple[int, int]:
  """`(largest bytes held by one device, total logical bytes)` of the arrays of `tree`."""
  held, total = {}, 0
  for x in jax.tree.leaves(tree):
    total += x.nbytes
    for shard in x.addressable_shards:
      held[shard.device] = held.get(shard.device, 0) + shard.data.nbytes
  return max(held.values()), total
