r"""Train-step throughput: rljax's Transformer against PyTorch + transformers on one config.

One step is a forward pass, next-token cross-entropy (mean over the B x (S-1) predicted
tokens), the backward pass and an AdamW update (lr 1e-4, betas (0.9, 0.999), eps 1e-8,
weight decay 0.01):

  * rljax: `nnx.split` the model, then one `jax.jit` of loss -> `jax.grad` -> `optax.adamw`,
    parameters and optimizer state donated;
  * PyTorch: `AutoModelForCausalLM.from_config` of the same Hugging Face config (Llama for
    `tiny`, Qwen2 for `qwen2_0_5b`), `loss = model(input_ids, labels=input_ids).loss`,
    `backward()`, `torch.optim.AdamW(fused=True)`; eager, and `torch.compile` unless
    `--no-compile` (or if compiling fails, which is reported).

Tokens/s counts the B x S input tokens of a step. MFU is model FLOPs / step time / peak, with
model FLOPs per token = 6 N + 12 L S H Dh (N = parameters in matrix multiplies, including the
output projection; the second term is attention scores and the weighted sum, forward and
backward, over the full S x S square as in PaLM, Chowdhery et al., arXiv:2204.02311, App. B),
and the peak measured in the same run: the faster of JAX and PyTorch on an n x n matmul of the
benchmark dtype (`--peak-size`, 2048 by default). On a GPU pass `--peak-tflops` to measure
against the card's datasheet peak instead.

The frameworks run in alternating rounds (`--rounds`), so load from other processes falls on
both; the reported time is the median step, and the process CPU time per step is printed too.
PyTorch gets as many threads as the process may use CPUs, so `taskset -c 0 python ...` compares
the two on one core. On CPU the script appends
`--xla_cpu_experimental_ynn_fusion_type=dot,reduce` to XLA_FLAGS before importing JAX (it
speeds the train step up; `--no-ynn-fusion` turns it off).

Usage:
  python benchmarks/train_step.py --config tiny --batch 16 --seq 128 --steps 5 --rounds 3
  python benchmarks/train_step.py --config qwen2_0_5b --dtype bfloat16 --peak-tflops 989
  python benchmarks/train_step.py --config tiny --breakdown   # forward / backward / update split
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time


def _parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", choices=("tiny", "qwen2_0_5b"), default="tiny")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--seq", type=int, default=128)
  p.add_argument("--steps", type=int, default=5, help="timed steps per round and framework")
  p.add_argument("--rounds", type=int, default=3, help="alternating rounds of timed steps")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation)")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  p.add_argument("--peak-size", type=int, default=2048, help="n of the n x n peak matmul")
  p.add_argument("--peak-tflops", type=float, default=None,
                 help="use this peak (TFLOP/s, e.g. a GPU's datasheet) instead of measuring")
  p.add_argument("--no-torch", action="store_true", help="time rljax only")
  p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
  p.add_argument("--no-ynn-fusion", action="store_true",
                 help="do not add --xla_cpu_experimental_ynn_fusion_type=dot,reduce")
  p.add_argument("--breakdown", action="store_true",
                 help="also time forward, forward+backward and the optimizer update alone")
  return p.parse_args(argv)


ARGS = _parse_args() if __name__ == "__main__" else None


def _on_gpu() -> bool:
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if platforms:
    return "cpu" not in platforms.split(",")[0]
  return shutil.which("nvidia-smi") is not None


if ARGS is not None and not ARGS.no_ynn_fusion and not _on_gpu():
  # Must precede `import jax`: XLA reads its flags once.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_cpu_experimental_ynn_fusion_type=dot,reduce").strip()

# PyTorch runs in the same process: on a GPU, JAX must not take most of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import optax  # pylint: disable=wrong-import-position
from flax import nnx  # pylint: disable=wrong-import-position

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from rljax.models import Transformer, TransformerConfig  # pylint: disable=wrong-import-position

LR, BETAS, EPS, WEIGHT_DECAY = 1e-4, (0.9, 0.999), 1e-8, 0.01


# ------------------------------------------------------------------------------- FLOPs


def make_config(name: str, dtype: str) -> TransformerConfig:
  if name == "tiny":
    return TransformerConfig.tiny(vocab_size=512, param_dtype=dtype)
  return TransformerConfig.qwen2_0_5b(param_dtype=dtype)


def matmul_params(c: TransformerConfig) -> int:
  """Parameters that enter a matrix multiply once per token (output projection included)."""
  q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
  per_layer = c.d_model * (2 * q + 2 * kv) + 3 * c.d_model * c.ffn_dim
  return c.num_layers * per_layer + c.vocab_size * c.d_model


def train_flops_per_token(c: TransformerConfig, seq: int) -> float:
  """6 N + 12 L S H Dh (forward + backward, attention over the full square)."""
  return 6.0 * matmul_params(c) + 12.0 * c.num_layers * seq * c.num_heads * c.head_dim


# -------------------------------------------------------------------------------- timing


def _median_time(fn, sync, n, cpu_times=None):
  """Wall-clock seconds of n calls (and, into `cpu_times`, this process's CPU seconds)."""
  times = []
  for _ in range(n):
    t0, c0 = time.perf_counter(), time.process_time()
    sync(fn())
    times.append(time.perf_counter() - t0)
    if cpu_times is not None:
      cpu_times.append(time.process_time() - c0)
  return times


def jax_matmul_flops(n: int, dtype: str, reps: int = 10) -> float:
  a = jnp.asarray(np.random.RandomState(0).standard_normal((n, n)), dtype)
  f = jax.jit(lambda x, y: x @ y)
  f(a, a).block_until_ready()
  times = _median_time(lambda: f(a, a), lambda x: x.block_until_ready(), reps)
  return 2.0 * n ** 3 / statistics.median(times)


def torch_matmul_flops(torch, n: int, dtype: str, device: str, reps: int = 10) -> float:
  a = torch.randn(n, n, dtype=getattr(torch, dtype), device=device)
  sync = (lambda _: torch.cuda.synchronize()) if device == "cuda" else (lambda _: None)
  sync(a @ a)
  times = _median_time(lambda: a @ a, sync, reps)
  return 2.0 * n ** 3 / statistics.median(times)


# ---------------------------------------------------------------------------------- rljax


def next_token_loss(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """Mean cross-entropy of tokens[:, 1:] under logits[:, :-1] (float32)."""
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
  return jnp.mean(nll)


class RljaxStep:
  """The jitted rljax train step and, for `--breakdown`, its parts."""

  def __init__(self, config: TransformerConfig, tokens: np.ndarray):
    model = Transformer(config, rngs=nnx.Rngs(0))
    self.graphdef, self.params = nnx.split(model, nnx.Param)
    self.tx = optax.adamw(LR, b1=BETAS[0], b2=BETAS[1], eps=EPS, weight_decay=WEIGHT_DECAY)
    self.opt_state = self.tx.init(self.params)
    self.tokens = jnp.asarray(tokens, jnp.int32)
    graphdef, tx = self.graphdef, self.tx

    def loss_fn(params, tokens):
      return next_token_loss(nnx.merge(graphdef, params)(tokens), tokens)

    def step(params, opt_state, tokens):
      loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss

    self._step = jax.jit(step, donate_argnums=(0, 1))
    self._loss = jax.jit(loss_fn)
    self._grad = jax.jit(jax.value_and_grad(loss_fn))

    def update(params, opt_state, grads):
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    self._update = jax.jit(update, donate_argnums=(0, 1))
    self.loss = None

  def step(self):
    self.params, self.opt_state, self.loss = self._step(self.params, self.opt_state, self.tokens)
    return self.loss

  def forward(self):
    return self._loss(self.params, self.tokens)

  def forward_backward(self):
    return self._grad(self.params, self.tokens)

  def make_update(self):
    _, grads = self._grad(self.params, self.tokens)

    def run():
      self.params, self.opt_state = self._update(self.params, self.opt_state, grads)
      return self.opt_state

    return run

  @staticmethod
  def sync(x):
    jax.block_until_ready(x)


# ---------------------------------------------------------------------------------- torch


class TorchStep:
  """The PyTorch + transformers train step (eager or compiled)."""

  def __init__(self, torch, transformers, config: TransformerConfig, tokens: np.ndarray,
               device: str, compile_model: bool):
    self.torch = torch
    torch.manual_seed(0)
    hf_config = transformers.AutoConfig.for_model(**config.to_hf_config())
    hf_config.use_cache = False
    model = transformers.AutoModelForCausalLM.from_config(
        hf_config, dtype=getattr(torch, config.param_dtype)).to(device)
    model.train()
    self.model = torch.compile(model) if compile_model else model
    self.opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS,
                                 weight_decay=WEIGHT_DECAY, fused=True)
    self.tokens = torch.as_tensor(tokens, dtype=torch.long, device=device)
    self.device = device
    self.loss = None

  def step(self):
    loss = self.model(input_ids=self.tokens, labels=self.tokens).loss
    loss.backward()
    self.opt.step()
    self.opt.zero_grad(set_to_none=True)
    self.loss = loss.detach()
    return self.loss

  def forward(self):
    with self.torch.no_grad():
      return self.model(input_ids=self.tokens, labels=self.tokens).loss

  def forward_backward(self):
    loss = self.model(input_ids=self.tokens, labels=self.tokens).loss
    loss.backward()
    return loss

  def make_update(self):
    self.forward_backward()

    def run():
      self.opt.step()  # gradients are kept, so every call is a full update
      return None

    return run

  def sync(self, _):
    if self.device == "cuda":
      self.torch.cuda.synchronize()


# ----------------------------------------------------------------------------------- main


def main(args):
  config = make_config(args.config, args.dtype)
  tokens = np.random.RandomState(0).randint(0, config.vocab_size, (args.batch, args.seq))
  backend = jax.default_backend()
  flops_step = train_flops_per_token(config, args.seq) * args.batch * args.seq
  print(f"config {args.config}: {config.num_params / 1e6:.2f}M params, {config.num_layers} "
        f"layers, d_model {config.d_model}, heads {config.num_heads}/{config.num_kv_heads}, "
        f"vocab {config.vocab_size}; batch {args.batch} x seq {args.seq}, {args.dtype}")
  print(f"jax {jax.__version__} on {backend} ({jax.devices()[0].device_kind}), "
        f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} CPUs usable, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  print(f"model FLOPs per step: {flops_step / 1e9:.1f} GFLOP "
        f"(6N + 12LSHDh per token, N = {matmul_params(config) / 1e6:.2f}M)")

  torch = transformers = None
  device = "cpu"
  if not args.no_torch:
    import torch  # pylint: disable=g-import-not-at-top,redefined-outer-name
    import transformers  # pylint: disable=g-import-not-at-top,redefined-outer-name
    transformers.logging.set_verbosity_error()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":  # as many threads as CPUs this process may run on (`taskset` aware)
      torch.set_num_threads(len(os.sched_getaffinity(0)))
    print(f"torch {torch.__version__} on {device} ({torch.get_num_threads()} threads), "
          f"transformers {transformers.__version__}")

  peaks = {"jax": jax_matmul_flops(args.peak_size, args.dtype)}
  if torch is not None:
    peaks["torch"] = torch_matmul_flops(torch, args.peak_size, args.dtype, device)
  if args.peak_tflops:
    peak, peak_src = args.peak_tflops * 1e12, "given"
  else:
    peak, peak_src = max(peaks.values()), "measured"
  print(f"matmul {args.peak_size}^2 {args.dtype}: " + ", ".join(
      f"{k} {v / 1e9:,.0f} GFLOP/s" for k, v in peaks.items()) +
        f" -> peak {peak / 1e9:,.0f} GFLOP/s ({peak_src})")

  runners = {}
  t0 = time.perf_counter()
  runners["rljax"] = RljaxStep(config, tokens)
  for _ in range(args.warmup):
    runners["rljax"].sync(runners["rljax"].step())
  print(f"rljax: built and compiled in {time.perf_counter() - t0:.1f}s, "
        f"first loss {float(runners['rljax'].loss):.3f} (ln V = {np.log(config.vocab_size):.3f})")
  if torch is not None:
    kinds = [("torch eager", False)] + ([] if args.no_compile else [("torch.compile", True)])
    for name, compiled in kinds:
      t0 = time.perf_counter()
      try:
        runner = TorchStep(torch, transformers, config, tokens, device, compiled)
        for _ in range(args.warmup):
          runner.sync(runner.step())
      except Exception as e:  # pylint: disable=broad-except
        print(f"{name}: failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
        continue
      runners[name] = runner
      print(f"{name}: built (and compiled) in {time.perf_counter() - t0:.1f}s, "
            f"first loss {float(runner.loss):.3f}")

  times = {name: [] for name in runners}
  cpu = {name: [] for name in runners}
  for _ in range(args.rounds):
    for name, runner in runners.items():
      times[name] += _median_time(runner.step, runner.sync, args.steps, cpu[name])

  def tok_s(name):
    return args.batch * args.seq / statistics.median(times[name])

  def mfu(name):
    return flops_step / statistics.median(times[name]) / peak

  def describe(name):
    spread = f"{min(times[name]) * 1e3:.0f}-{max(times[name]) * 1e3:.0f} ms"
    return (f"{name} {tok_s(name):,.0f} tok/s (MFU {100 * mfu(name):.0f}%, "
            f"step {statistics.median(times[name]) * 1e3:.0f} ms, range {spread})")

  print(f"timed {args.rounds} rounds x {args.steps} steps per framework, median step:")
  line = [describe("rljax")]
  if "torch eager" in runners:
    line += [describe("torch eager"), f"ratio {tok_s('rljax') / tok_s('torch eager'):.2f}x"]
  print(" | ".join(line))
  if "torch.compile" in runners:
    print(f"{describe('torch.compile')} | rljax vs torch.compile "
          f"{tok_s('rljax') / tok_s('torch.compile'):.2f}x")
  # CPU seconds per step (all threads): less sensitive than wall time to other processes
  # sharing the machine, though spin-waiting threads count too.
  cpu_ms = {name: 1e3 * statistics.median(v) for name, v in cpu.items()}
  line = ", ".join(f"{name} {ms:,.0f} ms" for name, ms in cpu_ms.items())
  if "torch eager" in cpu_ms:
    line += f" | ratio (torch eager / rljax CPU time) {cpu_ms['torch eager'] / cpu_ms['rljax']:.2f}x"
  print(f"process CPU time per step: {line}")

  if args.breakdown:
    print("breakdown (median ms): forward (loss) | forward+backward | AdamW update")
    for name in [n for n in ("rljax", "torch eager") if n in runners]:
      runner = runners[name]
      parts = []
      for fn in (runner.forward, runner.forward_backward, runner.make_update()):
        runner.sync(fn())
        parts.append(1e3 * statistics.median(_median_time(fn, runner.sync,
                                                          args.steps * args.rounds)))
      print(f"  {name:12s} {parts[0]:7.1f} | {parts[1]:7.1f} | {parts[2]:7.1f}")


if __name__ == "__main__":
  main(ARGS)
