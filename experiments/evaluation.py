"""Held-out evaluation: greedy accuracy, and sampled pass@1 / pass@k with the unbiased estimator."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import jax
import numpy as np

from rljax.train import mesh as mesh_lib


def pass_at_k(n: int, c: np.ndarray, k: int) -> np.ndarray:
  """Unbiased pass@k from n samples with c correct (Chen et al., arXiv 2107.03374)."""
  c = np.asarray(c)
  if n - k < 0:
    raise ValueError(f'pass@{k} needs at least {k} samples, got {n}')
  out = np.ones(c.shape, np.float64)
  nz = n - c >= k
  out[nz] = 1.0 - np.array([math.comb(n - ci, k) / math.comb(n, k) for ci in c[nz]])
  return out


def sample_texts(fn, params, data, ids: np.ndarray, mask: np.ndarray, key, *, chunk: int,
                 mesh) -> tuple[list[str], np.ndarray, np.ndarray]:
  """Completions of the prompt rows `ids`, sampled by `fn` in batches of `chunk` rows.

  The last batch is filled up with copies of the last row (one compiled shape); chunk `i`
  (starting row) samples with `fold_in(key, i)`.

  Returns:
    ``(texts, lengths int[n], stopped bool[n])`` of the `n` rows.
  """
  rows = ids.shape[0]
  pad = (-rows) % chunk
  ids = np.concatenate([ids, np.repeat(ids[-1:], pad, 0)])
  mask = np.concatenate([mask, np.repeat(mask[-1:], pad, 0)])
  texts, lengths, stopped = [], [], []
  for i in range(0, rows + pad, chunk):
    batch = mesh_lib.shard_batch((ids[i:i + chunk], mask[i:i + chunk]), mesh)
    out = mesh_lib.fetch(fn(params, batch[0], batch[1], jax.random.fold_in(key, i)))
    texts += data.tok.decode_batch(out.tokens, out.completion_mask)
    lengths += list(out.lengths)
    stopped += list(out.stopped)
  return texts[:rows], np.asarray(lengths[:rows]), np.asarray(stopped[:rows])


def evaluate(sampler: Callable[[float], Any], params, data, key, *, num_samples: int,
             temperature: float, chunk: int, mesh) -> dict[str, float]:
  """Greedy accuracy and sampled pass@1 / pass@`num_samples` on the held-out prompts.

  Args:
    sampler: ``temperature -> (params, ids, mask, key) -> rljax.sampling.Rollout``.
    params: the policy's parameters.
    data: an `experiments.data.Data`.
    key: the evaluation key; greedy decoding uses it, sampling `fold_in(key, 1)`.
    num_samples: k, sampled completions per prompt.
    temperature: of the sampled completions.
    chunk: rows per sampler call.
    mesh: the device mesh the batches are sharded over.
  """
  t0 = time.perf_counter()
  task, k = data.task, num_samples
  run = lambda ids, mask, temp, key: sample_texts(sampler(temp), params, data, ids, mask, key,
                                                  chunk=chunk, mesh=mesh)
  greedy, g_len, _ = run(data.eval_ids, data.eval_mask, 0.0, key)
  _, g_correct = task.grade_batch(data.eval_prompts, greedy)
  s_ids = np.repeat(data.eval_ids, k, axis=0)
  s_mask = np.repeat(data.eval_mask, k, axis=0)
  sampled, s_len, s_stop = run(s_ids, s_mask, temperature, jax.random.fold_in(key, 1))
  _, s_correct = task.grade_batch([p for p in data.eval_prompts for _ in range(k)], sampled)
  per_prompt = s_correct.reshape(len(data.eval_prompts), k).sum(1)
  return {
      'eval/greedy_accuracy': float(g_correct.mean()),
      'eval/sampled_pass@1': float(pass_at_k(k, per_prompt, 1).mean()),
      f'eval/pass@{k}': float(pass_at_k(k, per_prompt, k).mean()),
      'eval/greedy_length': float(g_len.mean()),
      'eval/sampled_length': float(s_len.mean()),
      'eval/truncation_rate': float(1.0 - s_stop.mean()),
      'eval/time': time.perf_counter() - t0,
  }


def format_eval(e: dict[str, float]) -> str:
  """One line `name=value, ...` of an evaluation (its time left out)."""
  return ', '.join(f'{k.split("/")[-1]}={v:.4f}' for k, v in e.items() if k != 'eval/time')
