r"""The RL update and the sampler on every mesh of 8 CPU devices: time, memory, FLOPs, collectives.

    python benchmarks/scaling.py          # meshes 1, 8x1x1, 2x4x1, 2x2x2, 1x2x4, 1x1x8
    python benchmarks/scaling.py --quick  # tiny shapes, meshes 1 and 2x2x2, one timed call

For each mesh (data x fsdp x tensor; "1" is one device) it compiles the jitted RL update
(`rljax.train.make_rl_update`, GRPO, `--epochs` passes of one mini-batch; with more than one
epoch the trainer's log-probs are recomputed first, with one the differentiated pass gives them) and the jitted KV-cache sampler (`rljax.sampling.sample_fn`) on the same
Qwen2-shaped model (grouped-query attention, SwiGLU), then prints

* step: median seconds of one RL update; sampler tokens/s: B x max_new_tokens / median seconds;
* per-device bytes, read from the arrays' shards on device 0: parameters and optimizer state;
* XLA's `compiled.memory_analysis()` of each program: temporaries (activations, and for the
  sampler the KV cache) per device;
* XLA's `compiled.cost_analysis()` FLOPs and bytes accessed of the compiled update (one device's
  program: SPMD compiles one program per device), against the model of docs/scaling.md:
  FLOPs = (R + 3 E) (2 N_body T + 2 V d T_c + 4 L S H Dh T) / (data x fsdp x tensor) per
  device, with T the batch's tokens, T_c its completion tokens (the output projection runs on
  those only), N_body the parameters in the decoder layers' matrix multiplies, E the epochs and
  R = 1 for the scoring pass when E > 1 (0 when the batch is used once);
* the collectives in the compiled update's HLO: bytes of all-reduce, all-gather, reduce-scatter
  and all-to-all results per device, against the model (see docs/scaling.md).

All figures come from this run on this machine; the 8 "devices" share the host's cores, so the
times show the cost of the partitioning and its collectives, not a speed-up. No figure is
asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time

if __name__ == '__main__':  # must precede `import jax`: XLA reads its flags once
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_force_host_platform_device_count=8').strip()
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
from flax import nnx  # pylint: disable=wrong-import-position

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
# pylint: disable=wrong-import-position
from rljax.models import Transformer, TransformerConfig
from rljax.sampling.sampler import sample_fn
from rljax.train import mesh as mesh_lib
from rljax.train import train_step as ts_lib
from rljax.train.batch import TrainBatch
from rljax.sampling import Rollout
# pylint: enable=wrong-import-position

MESHES = ('1', '8x1x1', '2x4x1', '2x2x2', '1x2x4', '1x1x8')
COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all', 'collective-permute')
_DTYPE_BYTES = {'f32': 4, 'bf16': 2, 'f16': 2, 's32': 4, 'u32': 4, 'pred': 1, 's8': 1, 'u8': 1,
                'f64': 8, 's64': 8, 'u64': 8}


def _parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--meshes', default=None,
                 help=f'comma-separated data x fsdp x tensor (default {",".join(MESHES)}; '
                 'with --quick 1,2x2x2)')
  p.add_argument('--d_model', type=int, default=256)
  p.add_argument('--layers', type=int, default=4)
  p.add_argument('--heads', type=int, default=8)
  p.add_argument('--kv_heads', type=int, default=8, help='a multiple of the tensor axis')
  p.add_argument('--ffn', type=int, default=1024)
  p.add_argument('--vocab', type=int, default=4096)
  p.add_argument('--batch', type=int, default=32, help='completions per update (B)')
  p.add_argument('--group', type=int, default=4, help='completions per prompt (G)')
  p.add_argument('--prompt', type=int, default=32, help='prompt tokens (P)')
  p.add_argument('--new', type=int, default=32, help='completion tokens (N)')
  p.add_argument('--epochs', type=int, default=1)
  p.add_argument('--reps', type=int, default=3, help='timed calls (median)')
  p.add_argument('--quick', action='store_true', help='tiny shapes and one timed call')
  args = p.parse_args(argv)
  if args.quick:
    args.d_model, args.layers, args.heads, args.kv_heads, args.ffn = 32, 1, 8, 8, 64
    args.vocab, args.batch, args.group, args.prompt, args.new, args.reps = 128, 8, 2, 4, 4, 1
  if args.meshes is None:
    args.meshes = '1,2x2x2' if args.quick else ','.join(MESHES)
  return args


def parse_mesh(text: str) -> tuple[int, int, int]:
  if text == '1':
    return 1, 1, 1
  parts = text.split('x')
  if len(parts) != 3 or not all(s.isdigit() and int(s) > 0 for s in parts):
    raise SystemExit(f'--meshes: {text!r} is not "1" or DATAxFSDPxTENSOR (e.g. 2x2x2)')
  return tuple(int(s) for s in parts)


# ------------------------------------------------------------------------------- the model


def body_params(c: TransformerConfig) -> int:
  """Parameters of the decoder layers that enter a matrix multiply once per token."""
  q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
  return c.num_layers * (c.d_model * (2 * q + 2 * kv) + 3 * c.d_model * c.ffn_dim)


def scoring_passes(epochs: int) -> int:
  """1 when the update scores the batch before its first step, 0 when the batch is used once
  (one epoch of one mini-batch: the differentiated pass gives the old log-probs)."""
  return 0 if epochs == 1 else 1


def model_update_flops(c: TransformerConfig, seqs: int, prompt: int, new: int,
                       epochs: int) -> float:
  """The scoring forward (if any) + `epochs` forward-backward passes.

  The output projection runs on the `new` completion positions only; attention covers the full
  S x S square (XLA computes it and applies the causal mask after).
  """
  seq = prompt + new
  tokens = seqs * seq
  attn = c.num_layers * seq * c.num_heads * c.head_dim
  forward = (2 * body_params(c) * tokens + 2 * c.vocab_size * c.d_model * seqs * new
             + 4 * attn * tokens)
  return (scoring_passes(epochs) + 3 * epochs) * forward


def model_collective_bytes(c: TransformerConfig, params_bytes: int, mesh: tuple[int, int, int],
                           tokens: int, epochs: int) -> dict[str, float]:
  """Per-device result bytes of the collectives of one update (docs/scaling.md, section 2).

  data: gradients all-reduced once per optimizer step (the parameters a device holds);
  fsdp: parameters all-gathered for each pass (scoring forward, forward and backward of each
  epoch) and gradients reduce-scattered once per step; tensor: two activation all-reduces per
  layer per pass (after the attention output and the MLP down projection), forward and backward.
  """
  d, f, t = mesh
  shard = params_bytes / (f * t)
  out = {'data': 0.0, 'fsdp': 0.0, 'tensor': 0.0}
  if d > 1:
    out['data'] = epochs * shard
  if f > 1:
    out['fsdp'] = (scoring_passes(epochs) + 2 * epochs) * params_bytes / t + epochs * shard
  if t > 1:
    local_tokens = tokens / (d * f)
    out['tensor'] = ((scoring_passes(epochs) + 2 * epochs) * 2 * c.num_layers * local_tokens
                     * c.d_model * 4)
  return out


# ---------------------------------------------------------------------------- measurement


def _shard_bytes(tree, device) -> int:
  total = 0
  for leaf in jax.tree.leaves(tree):
    for s in getattr(leaf, 'addressable_shards', ()):
      if s.device == device:
        total += s.data.nbytes
  return total


def hlo_collective_bytes(hlo: str) -> dict[str, int]:
  """Bytes of the results of each kind of collective in an optimized HLO module's text."""
  out = {k: 0 for k in COLLECTIVES}
  pattern = re.compile(r'=\s*(\(.*?\)|\S+)\s+(' + '|'.join(COLLECTIVES) + r')(-start)?\(')
  for m in pattern.finditer(hlo):
    for dtype, dims in re.findall(r'(\w+)\[([\d,]*)\]', m.group(1)):
      if dtype in _DTYPE_BYTES:
        out[m.group(2)] += _DTYPE_BYTES[dtype] * int(np.prod([int(x) for x in dims.split(',')
                                                              if x] or [1]))
  return out


def _median_seconds(fn, reps: int) -> float:
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _memory(compiled) -> dict[str, int]:
  m = compiled.memory_analysis()
  if m is None:
    return {}
  return {'args': int(m.argument_size_in_bytes), 'out': int(m.output_size_in_bytes),
          'temp': int(m.temp_size_in_bytes)}


def _cost(compiled) -> dict[str, float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return {'flops': float(cost.get('flops', 0.0)),
          'bytes': float(cost.get('bytes accessed', 0.0))}


def _batch(args, cfg, rng):
  b, length = args.batch, args.prompt + args.new
  prompt_mask = np.zeros((b, length), bool)
  prompt_mask[:, :args.prompt] = True
  sample = Rollout(
      tokens=rng.integers(0, cfg.vocab_size, (b, length)).astype(np.int32),
      prompt_mask=prompt_mask, completion_mask=~prompt_mask,
      behavior_logp=np.where(prompt_mask, 0.0, -np.log(cfg.vocab_size)).astype(np.float32),
      untruncated_logp=np.where(prompt_mask, 0.0, -np.log(cfg.vocab_size)).astype(np.float32),
      lengths=np.full((b,), args.new, np.int32), stopped=np.zeros((b,), bool))
  rewards = rng.integers(0, 2, (b,)).astype(np.float32)
  return TrainBatch.from_sample(sample, rewards, group_size=args.group)


def measure(args, mesh_shape: tuple[int, int, int]) -> dict:
  """Compiles and times the update and the sampler on one mesh."""
  mesh = mesh_lib.make_mesh(*mesh_shape)
  cfg = TransformerConfig.tiny(
      vocab_size=args.vocab, d_model=args.d_model, num_layers=args.layers,
      num_heads=args.heads, num_kv_heads=args.kv_heads, head_dim=args.d_model // args.heads,
      ffn_dim=args.ffn, max_seq_len=args.prompt + args.new, attention_bias=True)
  graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
  params = jax.device_put(params, mesh_lib.param_shardings(params, mesh))
  tx = ts_lib.make_optimizer(ts_lib.OptimizerConfig())
  rng = np.random.default_rng(0)
  with jax.set_mesh(mesh):
    state = ts_lib.init_train_state(params, tx, mesh)
    dev0 = mesh.devices.flat[0]
    row = {'mesh': mesh_shape, 'params_bytes': _shard_bytes(state.params, dev0),
           'opt_bytes': _shard_bytes(state.opt_state, dev0),
           'params_total': sum(x.nbytes for x in jax.tree.leaves(params))}
    batch = mesh_lib.shard_batch(_batch(args, cfg, rng), mesh)
    key = jax.random.key(0)
    update = ts_lib.make_rl_update(graphdef, tx, ts_lib.LossConfig('grpo'),
                                   group_size=args.group, num_epochs=args.epochs,
                                   max_new_tokens=args.new, donate=False)
    compiled = update.lower(state, None, batch, key).compile()
    row['update_mem'], row['update_cost'] = _memory(compiled), _cost(compiled)
    row['collectives'] = hlo_collective_bytes(compiled.as_text())
    compiled(state, None, batch, key)  # warm-up
    row['step_s'] = _median_seconds(lambda: compiled(state, None, batch, key), args.reps)
    row['model_flops'] = model_update_flops(cfg, args.batch, args.prompt, args.new,
                                            args.epochs) / mesh.size
    row['model_collectives'] = model_collective_bytes(
        cfg, row['params_total'], mesh_shape, args.batch * (args.prompt + args.new),
        args.epochs)

    sampler = jax.jit(lambda p, t, m, k: sample_fn(graphdef, p, t, m, k,
                                                   max_new_tokens=args.new))
    ids, mask = mesh_lib.shard_batch(
        (rng.integers(0, cfg.vocab_size, (args.batch, args.prompt)).astype(np.int32),
         np.ones((args.batch, args.prompt), bool)), mesh)
    s_compiled = sampler.lower(state.params, ids, mask, key).compile()
    row['sampler_mem'] = _memory(s_compiled)
    s_compiled(state.params, ids, mask, key)
    secs = _median_seconds(lambda: s_compiled(state.params, ids, mask, key), args.reps)
    row['sampler_tok_s'] = args.batch * args.new / secs
  row['config'] = cfg
  return row


# ------------------------------------------------------------------------------- printing


def _mib(b: float) -> str:
  return f'{b / 2 ** 20:8.3f}'


def print_table(rows, args) -> None:
  cfg = rows[0]['config']
  print(f'model: d_model={cfg.d_model} layers={cfg.num_layers} heads={cfg.num_heads} '
        f'kv_heads={cfg.num_kv_heads} ffn={cfg.ffn_dim} vocab={cfg.vocab_size} '
        f'({rows[0]["params_total"] / 4 / 1e6:.2f}M params, float32); batch B={args.batch} '
        f'(G={args.group}), P={args.prompt}, N={args.new}, epochs={args.epochs}; '
        f'{jax.device_count()} {jax.devices()[0].platform} devices')
  print('\nper device (MiB): params and optimizer state from the shards on device 0; temp = '
        'XLA memory_analysis temporaries')
  print(f'{"mesh":>7} {"step s":>8} {"samp tok/s":>10} {"params":>8} {"optim":>8} '
        f'{"upd temp":>8} {"samp temp":>9} {"XLA GFLOP":>9} {"model":>7} {"ratio":>5} '
        f'{"XLA MB acc":>10}')
  for r in rows:
    name = 'x'.join(map(str, r['mesh'])) if r['mesh'] != (1, 1, 1) else '1'
    xla, model = r['update_cost']['flops'], r['model_flops']
    print(f'{name:>7} {r["step_s"]:8.4f} {r["sampler_tok_s"]:10.0f} {_mib(r["params_bytes"])} '
          f'{_mib(r["opt_bytes"])} {_mib(r["update_mem"].get("temp", 0))} '
          f'{_mib(r["sampler_mem"].get("temp", 0)):>9} {xla / 1e9:9.4f} {model / 1e9:7.4f} '
          f'{xla / max(model, 1):5.2f} {r["update_cost"]["bytes"] / 1e6:10.2f}')
  print('\ncollectives of the compiled update, result MiB per device: XLA HLO (all-reduce / '
        'all-gather / reduce-scatter / all-to-all) vs model (data / fsdp / tensor)')
  for r in rows:
    name = 'x'.join(map(str, r['mesh'])) if r['mesh'] != (1, 1, 1) else '1'
    c, m = r['collectives'], r['model_collectives']
    print(f'{name:>7}  HLO {_mib(c["all-reduce"])} {_mib(c["all-gather"])} '
          f'{_mib(c["reduce-scatter"])} {_mib(c["all-to-all"])}   model {_mib(m["data"])} '
          f'{_mib(m["fsdp"])} {_mib(m["tensor"])}   sum HLO {_mib(sum(c.values()))} '
          f'model {_mib(sum(m.values()))}')


def main(argv=None) -> int:
  args = _parse_args(argv)
  meshes = [parse_mesh(m) for m in args.meshes.split(',')]
  need = max(int(np.prod(m)) for m in meshes)
  if jax.device_count() < need:
    raise SystemExit(f'--meshes needs {need} devices, {jax.device_count()} available')
  rows = [measure(args, m) for m in meshes]
  print_table(rows, args)
  return 0


if __name__ == '__main__':
  sys.exit(main())
