"""Where a decode step of the rljax sampler goes, measured by leaving parts of it out.

    python benchmarks/sampler_breakdown.py                  # tiny config, batch 64, 2 threads
    taskset -c 0 python benchmarks/sampler_breakdown.py     # the same on one core

Times `rljax.sampling.sample` (prompt 32, 96 new tokens, temperature 1) as it is, then with the
attention over the KV cache replaced by a pass-through of the queries, with rotary embeddings
left out, and with the sampling step replaced by an argmax, and prints the decode time per step
of each and the difference from the full sampler. The variants compute wrong tokens: they exist
only to attribute time. Each variant is compiled separately and timed as the median of
`--repeats` calls; variants run in `--rounds` alternating rounds so that drift affects all alike.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rljax.models import Transformer, TransformerConfig
from rljax.sampling import sample_jit

# Each variant leaves the named parts of every step out through `sample_fn`'s `ablate` option
# (in both the prefill and the decode step).
_VARIANTS = {
    "full sampler": (),
    "without attention": ("attention",),
    "without rotary embeddings": ("rope",),
    "without sampling (argmax)": ("sampling",),
}


def _compile(graphdef, state, prompts, mask, new_tokens, ablate):
  """Compiles `sample_jit` with the parts in `ablate` left out."""
  return sample_jit.lower(graphdef, state, prompts, mask, jax.random.key(0),
                          max_new_tokens=new_tokens, ablate=ablate).compile()


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--prompt_len", type=int, default=32)
  p.add_argument("--new_tokens", type=int, default=96)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--rounds", type=int, default=3)
  args = p.parse_args()
  for flag in ("batch", "prompt_len", "new_tokens", "repeats", "rounds"):
    if getattr(args, flag) < 1:
      p.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")

  cfg = TransformerConfig.tiny(vocab_size=512)
  graphdef, state = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  prompts = jnp.asarray(rng.integers(1, cfg.vocab_size, (args.batch, args.prompt_len)), jnp.int32)
  mask = jnp.ones_like(prompts)
  compiled = {name: _compile(graphdef, state, prompts, mask, args.new_tokens, ablate)
              for name, ablate in _VARIANTS.items()}
  key = iter(jax.random.split(jax.random.key(1), 100_000))
  times = {name: [] for name in compiled}
  for _ in range(args.rounds):
    for name, fn in compiled.items():
      run = lambda fn=fn: jax.block_until_ready(fn(graphdef, state, prompts, mask, next(key)))
      run()  # untimed
      for _ in range(args.repeats):
        t0 = time.perf_counter()
        run()
        times[name].append(time.perf_counter() - t0)
  per_step = {name: 1e3 * statistics.median(ts) / args.new_tokens for name, ts in times.items()}
  full = per_step["full sampler"]
  print(f"tiny config, batch {args.batch}, prompt {args.prompt_len}, {args.new_tokens} new tokens, "
        f"jax {jax.__version__} on {jax.default_backend()}")
  for name, ms in per_step.items():
    share = "" if name == "full sampler" else f"  (that part: {full - ms:5.2f} ms, " \
        f"{100 * (full - ms) / full:4.1f}% of the step)"
    print(f"{name:28s} {ms:6.2f} ms per step{share}")


if __name__ == "__main__":
  main()
