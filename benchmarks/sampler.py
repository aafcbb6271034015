"""Sampling throughput: rljax's jitted KV-cache sampler against its peers and the compute bound.

    python benchmarks/sampler.py --config tiny --batch_sizes 16,64

For each batch size it prints tokens/s (new tokens only, B * max_new_tokens / seconds) of

* rljax `sample` (prefill + cached decode in one jit; compile excluded);
* Hugging Face `generate` on PyTorch (`use_cache=True`, `do_sample=True`, temperature 1, no
  top-k/top-p, the same config and weights; on the CPU with `torch.set_num_threads(
  --torch_threads)`, on CUDA when JAX runs on a GPU);
* a naive JAX loop that recomputes the whole prefix at every step (O(T^2) instead of O(T));
* the compute bound: 2 * params FLOPs per generated token at the matmul throughput measured in the
  same run (a jitted `--matmul_size`^2 matmul in the model's dtype).

rljax and HF are timed in alternating blocks (`--rounds` x `--repeats` calls each; medians), so
that drift in the machine's speed affects both alike. Every figure comes from this run; compare
ratios, not absolute numbers across machines. No figure is asserted: this is a measurement
script.

On a machine shared with other jobs, wall-clock ratios mislead (PyTorch's OpenMP threads
degrade far more than XLA's under oversubscription). `--single_thread` runs both frameworks on
one thread (XLA and PyTorch) and times process CPU seconds instead of wall seconds, a proxy
that other processes disturb much less; its figures are tokens per CPU-second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

if "--single_thread" in sys.argv:  # must precede the first `import jax`
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen="
                             "false intra_op_parallelism_threads=1").strip()
_clock = time.process_time if "--single_thread" in sys.argv else time.perf_counter
# PyTorch runs in the same process: on a GPU, JAX must not take most of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from flax import nnx  # pylint: disable=g-import-not-at-top,wrong-import-position

from rljax.models import Transformer, TransformerConfig  # pylint: disable=wrong-import-position
from rljax.sampling import sample_jit  # pylint: disable=wrong-import-position


def _config(name: str, dtype: str) -> TransformerConfig:
  if name == "tiny":
    return TransformerConfig.tiny(vocab_size=512, param_dtype=dtype)
  if name == "qwen2_0_5b":
    return TransformerConfig.qwen2_0_5b(param_dtype=dtype)
  raise ValueError(f"--config must be one of ['tiny', 'qwen2_0_5b'], got {name!r}.")


def matmul_flops_per_s(size: int, dtype, repeats: int = 10) -> float:
  """Best-of-`repeats` FLOP/s of a jitted size x size matmul."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32).astype(dtype)
  f = jax.jit(lambda x, y: x @ y)
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = _clock()
    f(a, b).block_until_ready()
    best = min(best, _clock() - t0)
  return 2.0 * size ** 3 / best


def _median_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = _clock()
    fn()
    times.append(_clock() - t0)
  return statistics.median(times)


def rljax_runner(model, prompts, mask, new_tokens, segment_size):
  """Compiles rljax sampling; returns (run, compile seconds): `run()` samples once, new key."""
  graphdef, state = nnx.split(model)
  kw = dict(max_new_tokens=new_tokens, temperature=1.0, top_k=None, top_p=None, min_p=None,
            stop_tokens=(), pad_id=0, segment_size=segment_size)
  t0 = time.perf_counter()
  compiled = sample_jit.lower(graphdef, state, prompts, mask, jax.random.key(0), **kw).compile()
  compile_s = time.perf_counter() - t0
  keys = iter(jax.random.split(jax.random.key(1), 10_000))
  run = lambda: jax.block_until_ready(compiled(graphdef, state, prompts, mask, next(keys)))
  run()  # warm-up
  return run, compile_s


def bench_naive(model, prompts, mask, new_tokens):
  """Recomputes the full (fixed-width, causal) buffer at every step: O(T^2) work."""
  graphdef, state = nnx.split(model)
  b, p = prompts.shape

  @jax.jit
  def run(state, prompts, mask, key):
    m = nnx.merge(graphdef, state)
    buf = jnp.concatenate([prompts, jnp.zeros((b, new_tokens), jnp.int32)], 1)
    msk = jnp.concatenate([mask, jnp.zeros((b, new_tokens), jnp.int32)], 1)

    def step(t, carry):
      buf, msk = carry
      logits = m(buf, None, msk)
      z = jax.lax.dynamic_index_in_dim(logits, p + t - 1, axis=1, keepdims=False)
      tok = jax.random.categorical(jax.random.fold_in(key, t), z).astype(jnp.int32)
      buf = jax.lax.dynamic_update_slice_in_dim(buf, tok[:, None], p + t, axis=1)
      msk = jax.lax.dynamic_update_slice_in_dim(msk, jnp.ones((b, 1), jnp.int32), p + t, axis=1)
      return buf, msk

    return jax.lax.fori_loop(0, new_tokens, step, (buf, msk))[0]

  compiled = run.lower(state, prompts, mask, jax.random.key(0)).compile()
  sec = _median_time(lambda: jax.block_until_ready(
      compiled(state, prompts, mask, jax.random.key(0))), 1)
  return b * new_tokens / sec


def hf_model_from(model, cfg, device="cpu"):
  """A transformers LlamaForCausalLM/Qwen2ForCausalLM with the same weights, on `device`.

  Built in memory from the same config (not through `rljax.models.hf.to_hf`, so the benchmark
  writes no files).
  """
  import torch
  import transformers
  hf_cfg = cfg.to_hf_config()
  hf_cfg.pop("architectures")
  cls = (transformers.Qwen2Config if hf_cfg["model_type"] == "qwen2"
         else transformers.LlamaConfig)
  hf_cfg.pop("model_type")
  hf_cfg.pop("torch_dtype")
  config = cls(**hf_cfg, bos_token_id=None, eos_token_id=None, pad_token_id=0)
  hf = (transformers.Qwen2ForCausalLM if cls is transformers.Qwen2Config
        else transformers.LlamaForCausalLM)(config)
  dtype = torch.bfloat16 if cfg.param_dtype == "bfloat16" else torch.float32
  hf = hf.to(dtype).eval()
  from rljax.models import hf as hf_io  # pylint: disable=g-import-not-at-top
  sd = {name: torch.from_numpy(np.array(value, np.float32)).to(dtype)
        for name, value in hf_io.to_hf_tensors(model).items()}
  missing, unexpected = hf.load_state_dict(sd, strict=False)
  if unexpected or set(missing) - {"lm_head.weight"}:
    raise RuntimeError(f"weight copy mismatch: missing {missing}, unexpected {unexpected}")
  if cfg.tie_embeddings:
    hf.tie_weights()
  return hf.to(device)


def hf_runner(hf, prompts, mask, new_tokens):
  """`run()` samples once with Hugging Face `generate` (after a warm-up call)."""
  import torch
  device = next(hf.parameters()).device
  ids = torch.from_numpy(np.asarray(prompts, np.int64)).to(device)
  att = torch.from_numpy(np.asarray(mask, np.int64)).to(device)
  kw = dict(attention_mask=att, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
            max_new_tokens=new_tokens, min_new_tokens=new_tokens, use_cache=True,
            pad_token_id=0)

  def run():
    with torch.inference_mode():
      hf.generate(ids, **kw)
    if device.type == "cuda":
      torch.cuda.synchronize()

  run()  # warm-up
  return run


def alternating_medians(runs, repeats: int, rounds: int):
  """Median seconds per call of each runner, timed in `rounds` alternating blocks.

  Every round times `repeats` calls of each runner in turn, after a pause (PyTorch's OpenMP
  threads spin for a while after their last parallel region and would compete with the next
  block) and one untimed call, so that drift in the machine's speed affects every runner alike.
  """
  times = [[] for _ in runs]
  for _ in range(rounds):
    for run, ts in zip(runs, times):
      time.sleep(0.5)
      run()  # untimed: the first call after a pause runs cold (idle thread pools, caches)
      for _ in range(repeats):
        t0 = _clock()
        run()
        ts.append(_clock() - t0)
  return [statistics.median(ts) for ts in times]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="tiny", choices=["tiny", "qwen2_0_5b"])
  parser.add_argument("--batch_sizes", default="16,64")
  parser.add_argument("--prompt_len", type=int, default=32)
  parser.add_argument("--new_tokens", type=int, default=96)
  parser.add_argument("--repeats", type=int, default=3, help="timed calls per round")
  parser.add_argument("--rounds", type=int, default=3,
                      help="alternating rounds of rljax and HF blocks")
  parser.add_argument("--dtype", default=None, help="float32 | bfloat16 (default: float32 on "
                      "CPU, bfloat16 on an accelerator)")
  parser.add_argument("--matmul_size", type=int, default=None,
                      help="side of the peak-throughput matmul (default 2048 on CPU, 8192 else)")
  parser.add_argument("--torch_threads", type=int, default=2)
  parser.add_argument("--single_thread", action="store_true",
                      help="one thread for XLA and PyTorch, timed in process CPU seconds")
  parser.add_argument("--segment_size", type=int, default=None)
  parser.add_argument("--skip_hf", action="store_true")
  parser.add_argument("--skip_naive", action="store_true")
  parser.add_argument("--naive_batch_sizes", default="16",
                      help="batch sizes at which to run the slow O(T^2) loop")
  args = parser.parse_args()
  for flag in ("repeats", "rounds"):
    if getattr(args, flag) < 1:
      parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")

  backend = jax.default_backend()
  dtype = args.dtype or ("float32" if backend == "cpu" else "bfloat16")
  cfg = _config(args.config, dtype)
  size = args.matmul_size or (2048 if backend == "cpu" else 8192)
  flops = matmul_flops_per_s(size, cfg.dtype)
  print(f"device: {jax.devices()[0].device_kind} ({backend}); config {args.config} "
        f"({cfg.num_params / 1e6:.2f}M params, {dtype}); prompt {args.prompt_len}, "
        f"{args.new_tokens} new tokens, temperature 1")
  if args.single_thread:
    print("single thread, timed in process CPU seconds (figures are per CPU-second)")
  print(f"matmul {size}x{size} {dtype}: {flops / 1e9:,.0f} GFLOP/s")
  model = Transformer(cfg, rngs=nnx.Rngs(0))
  bound = flops / (2.0 * cfg.num_params)
  print(f"compute bound: {bound:,.0f} tok/s (2 x {cfg.num_params:,} params FLOPs per token at "
        "the measured matmul rate)")
  hf = None
  if not args.skip_hf:
    try:
      import torch  # pylint: disable=g-import-not-at-top
      torch.set_num_threads(1 if args.single_thread else args.torch_threads)
      device = "cpu" if backend == "cpu" else "cuda"
      if device == "cuda" and not (backend == "gpu" and torch.cuda.is_available()):
        print(f"Hugging Face comparison skipped: JAX runs on {backend} and PyTorch sees no "
              "CUDA device.")
      else:
        hf = hf_model_from(model, cfg, device)
        print(f"Hugging Face generate runs on PyTorch {torch.__version__}, {device}")
    except ImportError as e:
      print(f"Hugging Face comparison skipped: {e}")
  naive_bs = {int(b) for b in args.naive_batch_sizes.split(",") if b}
  rng = np.random.RandomState(0)
  for b in [int(x) for x in args.batch_sizes.split(",")]:
    prompts = jnp.asarray(rng.randint(1, cfg.vocab_size, (b, args.prompt_len)), jnp.int32)
    mask = jnp.ones((b, args.prompt_len), jnp.int32)
    run, compile_s = rljax_runner(model, prompts, mask, args.new_tokens, args.segment_size)
    runs = [run] + ([hf_runner(hf, prompts, mask, args.new_tokens)] if hf is not None else [])
    secs = alternating_medians(runs, args.repeats, args.rounds)
    tps = b * args.new_tokens / secs[0]
    parts = [f"batch {b}: rljax {tps:,.0f} tok/s (compile {compile_s:.1f} s)"]
    if hf is not None:
      hf_tps = b * args.new_tokens / secs[1]
      parts.append(f"HF generate {hf_tps:,.0f} tok/s | vs HF generate: {tps / hf_tps:.2f}x")
    if not args.skip_naive and b in naive_bs:
      naive_tps = bench_naive(model, prompts, mask, args.new_tokens)
      parts.append(f"naive recompute loop {naive_tps:,.0f} tok/s | vs naive: "
                   f"{tps / naive_tps:.1f}x")
    parts.append(f"{100 * tps / bound:.0f}% of compute bound")
    print(" | ".join(parts), flush=True)


if __name__ == "__main__":
  main()
