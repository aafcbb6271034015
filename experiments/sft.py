"""The supervised warm-start phase: teacher forcing on the task's demonstrations."""

from __future__ import annotations

import time

import jax
import numpy as np

from experiments.data import epoch_batch_indices
from rljax.train import mesh as mesh_lib


def run_sft(harness, run, state: dict, step: int) -> tuple[dict, int]:
  """Warm-start steps from `step` up to `--sft_steps`; returns the state and the step reached.

  Batch `step` is `epoch_batch_indices(..., step, seed)`, so a resumed phase continues the
  uninterrupted order. Metrics are written every `--log_every` steps (times are averages since
  the last write), evaluations every `--sft_eval_every`, checkpoints every
  `--checkpoint_every` steps before the last one (the caller saves after the last step).

  Args:
    harness: the `experiments.train.Harness` of the run.
    run: the run's writer, evaluations and checkpoints (`experiments.train.Run`).
    state: ``{'train': TrainState, 'rng': ...}``.
    step: steps done so far.
  """
  c, d = harness.config, harness.data
  t_log, step_log, tokens = time.perf_counter(), step, 0
  while step < c.sft_steps:
    idx = epoch_batch_indices(d.sft_tokens.shape[0], c.sft_batch_size, step, c.seed)
    batch = mesh_lib.shard_batch(
        (d.sft_tokens[idx], d.sft_input_mask[idx], d.sft_target[idx]), harness.mesh)
    train, m = harness.sft_step(state['train'], *batch)
    state = dict(state, train=train)
    step += 1
    tokens += int(np.sum(d.sft_input_mask[idx]))
    if step % c.log_every == 0 or step == c.sft_steps:
      m = jax.device_get(m)  # Waits for the queued steps: time per step is an average.
      dt = time.perf_counter() - t_log
      m['sft/step_time'] = dt / max(step - step_log, 1)
      m['sft/tokens_per_sec'] = tokens / max(dt, 1e-9)
      run.writer.write_scalars(step, m)
      t_log, step_log, tokens = time.perf_counter(), step, 0
    if c.sft_eval_every and step % c.sft_eval_every == 0 and step < c.sft_steps:
      run.evaluate(f'sft_{step}', step, state['train'].params)
      t_log, step_log, tokens = time.perf_counter(), step, 0
    if step < c.sft_steps and c.checkpoint_every and step % c.checkpoint_every == 0:
      run.save(step, state, 'sft')
  return state, step
