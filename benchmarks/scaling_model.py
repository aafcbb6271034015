r"""The scaling model of docs/scaling.md: RL update and sampler of Qwen2-shaped models on pods.

    python benchmarks/scaling_model.py

Prints, for Qwen2.5-1.5B and Qwen2.5-7B shapes (their published configs) on a TPU v5e-256 slice
and on 8xH100, FLOPs per token, memory per chip, bytes per collective per RL update for each mesh
axis, compute and communication times, and the decode rate of the sampler; the formulas are in
docs/scaling.md. Pure arithmetic: nothing runs on a device.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Shape:
  name: str
  d: int
  layers: int
  heads: int
  kv_heads: int
  ffn: int
  vocab: int
  tied: bool
  head_dim: int = 128

  def matmul_params(self) -> float:
    """N: parameters in matrix multiplies per token (the output projection included)."""
    q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
    return self.layers * (self.d * (2 * q + 2 * kv) + 3 * self.d * self.ffn) + \
        self.vocab * self.d

  def params(self) -> float:
    """All parameters (embedding counted once when tied; biases of q, k, v; norms)."""
    q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
    extra = self.layers * (q + 2 * kv + 2 * self.d) + self.d
    return self.matmul_params() + (0 if self.tied else self.vocab * self.d) + extra

  def kv_bytes_per_token(self, dtype_bytes: int = 2) -> float:
    return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


@dataclasses.dataclass(frozen=True)
class System:
  name: str
  chips: int
  peak: float  # bf16 FLOP/s per chip
  hbm: float  # bytes per chip
  hbm_bw: float  # bytes/s per chip
  link: float  # collective bandwidth per chip, bytes/s one way


QWEN_1_5B = Shape('Qwen2.5-1.5B', 1536, 28, 12, 2, 8960, 151936, tied=True)
QWEN_7B = Shape('Qwen2.5-7B', 3584, 28, 28, 4, 18944, 152064, tied=False)
V5E_256 = System('TPU v5e-256', 256, 197e12, 16 * 2**30, 819e9, 200e9)
H100_8 = System('8xH100 SXM', 8, 989e12, 80e9, 3.35e12, 450e9)

# One RL step: 64 prompts x 8 completions, 256 prompt + 768 completion tokens, one epoch of one
# mini-batch (so, as in rljax's update, no separate scoring pass: the differentiated pass gives
# the old log-probs; and the output projection on the completion positions only); float32
# parameters, gradients and Adam moments (16 bytes per parameter), bf16 compute.
SEQS, PROMPT, NEW, EPOCHS = 512, 256, 768, 1
PARAM_BYTES, STATE_BYTES_PER_PARAM = 4, 16


def scoring_passes(epochs: int) -> int:
  """1 when the update scores the batch before its first step; 0 when it is used once."""
  return 0 if epochs == 1 else 1


def update_flops(m: Shape, seqs: float, prompt: int, new: int, epochs: int = EPOCHS) -> float:
  """(R + 3E) forward passes' worth: 2 N_body T + 2 V d T_c + 4 L S H Dh T per forward."""
  seq = prompt + new
  tokens = seqs * seq
  attn = m.layers * seq * m.heads * m.head_dim
  body = m.matmul_params() - m.vocab * m.d
  forward = 2 * body * tokens + 2 * m.vocab * m.d * seqs * new + 4 * attn * tokens
  return (scoring_passes(epochs) + 3 * epochs) * forward


def collective_bytes(m: Shape, mesh: tuple[int, int, int], tokens: float,
                     epochs: int = EPOCHS) -> dict[str, float]:
  """Bytes each chip receives per RL update, per axis (ring algorithms: (n-1)/n factors)."""
  d, f, t = mesh
  p = m.params() * PARAM_BYTES
  ring = lambda n: (n - 1) / n
  passes = scoring_passes(epochs) + 2 * epochs  # forward and backward passes
  out = {'data': 2 * ring(d) * epochs * p / (f * t),  # gradient all-reduce of a chip's shard
         'fsdp': ring(f) * (passes * p / t + epochs * p / t),  # gathers + scatter
         'tensor': 0.0}
  local_tokens = tokens / (d * f)
  # Two activation all-reduces per layer per pass ([local tokens, d] in bf16).
  out['tensor'] = 2 * ring(t) * passes * 2 * m.layers * local_tokens * m.d * 2
  return out


def update_row(m: Shape, s: System, mesh: tuple[int, int, int], mfu: float = 0.5) -> dict:
  tokens = SEQS * (PROMPT + NEW)
  flops = update_flops(m, SEQS, PROMPT, NEW)
  comm = collective_bytes(m, mesh, tokens)
  d, f, t = mesh
  state = m.params() * STATE_BYTES_PER_PARAM / (f * t)
  return {'mesh': mesh, 'flops': flops, 'compute_s': flops / (s.chips * s.peak * mfu),
          'comm': comm, 'comm_s': sum(comm.values()) / s.link, 'state_gb': state / 1e9}


def decode_rate(m: Shape, s: System, batch_per_chip: float, ctx: float, tensor: int = 1) -> dict:
  """Tokens/s per chip of a decode step: the larger of the FLOP time and the HBM read time."""
  weights = 2 * m.params() / tensor  # bf16 weights read once per step
  kv = batch_per_chip * tensor * ctx * m.kv_bytes_per_token() / tensor
  flops = batch_per_chip * tensor * (2 * m.matmul_params() +
                                     4 * m.layers * m.heads * m.head_dim * ctx) / tensor
  step = max(flops / s.peak, (weights + kv) / s.hbm_bw)
  return {'tok_s': batch_per_chip / step, 'mfu': flops / step / s.peak,
          'bound': 'memory' if (weights + kv) / s.hbm_bw > flops / s.peak else 'compute'}


def main() -> int:
  print(f'RL step: {SEQS} sequences x ({PROMPT} + {NEW}) tokens, {EPOCHS} epoch; float32 '
        f'params/grads/Adam ({STATE_BYTES_PER_PARAM} B/param), bf16 compute, MFU 0.5 assumed '
        'for compute time')
  plans = {('Qwen2.5-1.5B', 'TPU v5e-256'): [(256, 1, 1), (16, 16, 1), (1, 256, 1), (64, 4, 1)],
           ('Qwen2.5-7B', 'TPU v5e-256'): [(16, 16, 1), (8, 32, 1), (1, 256, 1), (32, 4, 2)],
           ('Qwen2.5-1.5B', '8xH100 SXM'): [(8, 1, 1), (1, 8, 1), (4, 1, 2)],
           ('Qwen2.5-7B', '8xH100 SXM'): [(8, 1, 1), (1, 8, 1), (2, 4, 1), (1, 4, 2)]}
  for m in (QWEN_1_5B, QWEN_7B):
    n, seq = m.matmul_params(), PROMPT + NEW
    train_per_token = 6 * n + 12 * m.layers * seq * m.heads * m.head_dim
    print(f'\n{m.name}: {m.params() / 1e9:.3f}B params, N (matmul) = {n / 1e9:.3f}B;'
          f' train FLOPs/token = 6N + 12 L S H Dh = {train_per_token / 1e9:.2f}'
          f' GFLOP at S={PROMPT + NEW}; decode 2N = {2 * m.matmul_params() / 1e9:.2f} GFLOP/token;'
          f' KV cache {m.kv_bytes_per_token() / 1024:.0f} KiB/token (bf16)')
    for s in (V5E_256, H100_8):
      print(f'  {s.name}:  mesh d x f x t | state GB/chip | update PFLOP | compute s | '
            'data / fsdp / tensor GB per chip | comm s')
      for mesh in plans[(m.name, s.name)]:
        r = update_row(m, s, mesh)
        c = r['comm']
        fit = '' if r['state_gb'] * 1e9 < 0.75 * s.hbm else '  (state alone > 3/4 HBM)'
        print(f'    {"x".join(map(str, mesh)):>9} | {r["state_gb"]:8.2f} | '
              f'{r["flops"] / 1e15:7.2f} | {r["compute_s"]:7.3f} | {c["data"] / 1e9:7.2f} {c["fsdp"] / 1e9:7.2f} '
              f'{c["tensor"] / 1e9:7.2f} | {r["comm_s"]:6.3f}{fit}')
      per_chip = SEQS / s.chips
      # bf16 weights over half the HBM leave too little for the KV cache: shard them on tensor.
      tensor = 1 if 2 * m.params() < 0.5 * s.hbm else 4
      for b in (per_chip, 128):
        r = decode_rate(m, s, b, PROMPT + NEW / 2, tensor)
        print(f'    decode (tensor={tensor}), {b:g} sequences per chip, mean context '
              f'{PROMPT + NEW // 2}: {r["tok_s"]:,.0f} tok/s per chip ({r["bound"]}-bound, '
              f'MFU {r["mfu"]:.1%}); {NEW} decode steps take {NEW * b / r["tok_s"]:.2f} s')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
