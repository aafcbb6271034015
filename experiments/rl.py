"""The RL phase: one step samples the curriculum's prompts, grades the completions and updates.

The curriculum decides how completions are drawn (`curriculum.collect(key, P, G, draw)`): most
call `draw(key, G)` once; multi-round ones (Reinforce-Ada) call it per round and return their
own advantages and metrics. Nothing here depends on which curriculum runs.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rljax.train import mesh as mesh_lib
from rljax.train.batch import TrainBatch


def make_draw(harness, params, arms: np.ndarray, times: dict[str, float]) -> Callable[..., Any]:
  """The curriculum's `draw(key, per_prompt)` for the pool prompts `arms` at `params`.

  `draw` samples `per_prompt` completions of each prompt (prompt-major) with the rollout
  sampler and grades each once; it returns ``(host sample, rewards float32[P * per_prompt],
  correct bool[P * per_prompt])`` and adds its sampling and grading seconds to `times`. With
  several processes each one feeds its own devices' rows of the prompts (`shard_batch`) and
  gathers the whole sample (`fetch`), so every process grades the same global batch.
  """
  c, d = harness.config, harness.data
  prompts = [d.pool_prompts[a] for a in arms]

  def draw(key, per_prompt: int):
    t0 = time.perf_counter()
    # Each prompt once, prefilled once for its group, when the prompts alone split over the
    # mesh's batch axes; else every prompt repeated per_prompt times.
    shared = per_prompt if len(arms) % mesh_lib.batch_size_multiple(harness.mesh) == 0 else 1
    ids = np.repeat(d.pool_ids[arms], per_prompt // shared, axis=0)
    mask = np.repeat(d.pool_mask[arms], per_prompt // shared, axis=0)
    ids, mask = mesh_lib.shard_batch((ids, mask), harness.mesh)
    host = mesh_lib.fetch(harness.sampler(c.temperature, shared)(params, ids, mask, key))
    t1 = time.perf_counter()
    texts = d.tok.decode_batch(host.tokens, host.completion_mask)
    rewards, correct = d.task.grade_batch([p for p in prompts for _ in range(per_prompt)], texts)
    times['sample'] += t1 - t0
    times['reward'] += time.perf_counter() - t1
    return host, rewards, correct

  return draw


def rl_step(harness, state: dict, rl_step_index: int, rl_key) -> tuple[dict, dict[str, float]]:
  """One RL step: prompts, completions, rewards, `num_epochs x num_minibatches` updates.

  Args:
    harness: the `experiments.train.Harness` of the run.
    state: ``{'train', 'ref_params', 'curriculum', 'rng'}``.
    rl_step_index: RL steps done so far (its key is `fold_in(rl_key, rl_step_index)`).
    rl_key: the key of the RL phase.

  Returns:
    The new state and the step's metrics (the update's, the curriculum's, pass rate, times).
  """
  c = harness.config
  k_cur, k_sample, k_update = jax.random.split(jax.random.fold_in(rl_key, rl_step_index), 3)
  t0 = time.perf_counter()
  times = {'sample': 0.0, 'reward': 0.0}
  arms, cstate = harness.curriculum.sample(state['curriculum'], k_cur, c.num_prompts)
  arms = np.asarray(arms)
  params = state['train'].params
  stale = state.get('stale')
  # With --rollout_staleness=k the sampler is the policy of k RL steps ago (an asynchronous
  # trainer's data); the current policy joins the queue before the update donates its buffers.
  draw = make_draw(harness, stale[0] if stale else params, arms, times)
  errors_before = getattr(harness.data.task, 'reward_errors', None)  # With --reward.
  collected = harness.curriculum.collect(k_sample, c.num_prompts, c.group_size, draw)
  if stale:
    stale = stale[1:] + [jax.tree.map(jnp.copy, params)]
  batch = TrainBatch.from_sample(collected.sample, collected.rewards, group_size=c.group_size,
                                 advantages=collected.advantages)
  t_train = time.perf_counter()
  batch = mesh_lib.shard_batch(batch, harness.mesh)
  train, m = harness.rl_update(state['train'], state['ref_params'], batch, k_update)
  rewards = np.asarray(collected.rewards)
  cstate = harness.curriculum.update(cstate, jnp.asarray(arms),
                                     jnp.asarray(rewards.reshape(-1, c.group_size)))
  cstate = mesh_lib.replicate(cstate, harness.mesh)  # the curriculum's jit leaves it on one device
  state = dict(state, train=train, curriculum=cstate)
  if stale:
    state['stale'] = stale
  m = {k: float(v) for k, v in mesh_lib.fetch(m).items()}  # Also ends this step's work.
  t_end = time.perf_counter()
  m.update(collected.metrics)
  if errors_before is not None:
    m['reward/errors'] = float(harness.data.task.reward_errors - errors_before)
  m.update({
      'pass_rate': float(np.mean(collected.correct)),
      'sample_time': times['sample'], 'reward_time': times['reward'],
      'train_time': t_end - t_train, 'step_time': t_end - t0,
      'tokens_per_sec': float(np.sum(collected.sample.lengths)) / max(t_end - t0, 1e-9),
  })
  return state, m


def run_rl(harness, run, state: dict, step: int, rl_key) -> tuple[dict, int]:
  """RL steps from `step` up to the run's last step; returns the state and the step reached.

  Metrics are written every `--log_every` RL steps and at the last one, evaluations every
  `--eval_every`, checkpoints every `--checkpoint_every` steps before the last one (the caller
  evaluates and saves after the last step).
  """
  c = harness.config
  while step < harness.total_steps:
    state, m = rl_step(harness, state, step - c.sft_steps, rl_key)
    step += 1
    rl_done = step - c.sft_steps
    if rl_done % c.log_every == 0 or step == harness.total_steps:
      run.writer.write_scalars(step, m)
    if c.eval_every and rl_done % c.eval_every == 0 and step < harness.total_steps:
      run.evaluate(f'rl_{rl_done}', step, state['train'].params)
    if step < harness.total_steps and c.checkpoint_every and step % c.checkpoint_every == 0:
      run.save(step, state, 'rl')
  return state, step
