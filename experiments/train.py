"""The experiment loop: supervised warm start, then RL with any estimator, with evaluation,
metrics, checkpoints and exact resumption.

`train_and_evaluate(config, workdir)` is what `python -m experiments.launch` calls and what a
notebook calls directly:

    from experiments.config import Config
    from experiments.train import train_and_evaluate
    summary = train_and_evaluate(Config(estimator='gspo', rl_steps=50), '/tmp/run')

Phases (one step counter; steps 1..sft_steps are warm-start steps, the next rl_steps are RL):

1. Warm start (optional, `experiments.sft`): a fresh policy is trained on the task's
   demonstrations (a fixed set of `sft_num_demos`, visited in a seeded order), or the policy is
   loaded with `--init_from_hf`.
2. Evaluation "before" (`experiments.evaluation`): greedy accuracy and sampled pass@k on the
   held-out split.
3. RL steps (`experiments.rl`): the curriculum picks `num_prompts` prompts of the pool and
   collects completions of each with behaviour log-probs; the task's verifier gives the rewards;
   the jitted update (`rljax.train.make_rl_update`) takes `num_epochs x num_minibatches`
   optimizer steps on the batch; the warm-start policy is the frozen reference of KL terms.
4. Evaluation every `eval_every` RL steps and at the end ("after"); before/after printed and
   written to `<workdir>/summary.json`.

The data of every phase is built by `experiments.data`. Determinism: every random draw is keyed
by `fold_in(key(seed), phase, step)` and every data position is a function of the step, so a run
restarted from a checkpoint (params, optimizer state, step, RNG, curriculum state) continues
exactly as the uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import resource
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import evaluation
from experiments.config import Config
from experiments.data import build_data
from experiments.data import corrupt_demonstrations  # pylint: disable=unused-import
from experiments.rl import run_rl
from experiments.sft import run_sft
from rljax.train import checkpoint as ckpt_lib
from rljax.train import mesh as mesh_lib
from rljax.train import metrics as metrics_lib
from rljax.train import train_step as ts_lib

logger = logging.getLogger(__name__)

# Streams of randomness: fold_in constants of the phases (checkpointed runs depend on them).
_RL_STREAM, _EVAL_STREAM = 2, 3


def model_config(config: Config, vocab_size: int, max_seq_len: int):
  """The `TransformerConfig` of a fresh policy from the preset and overrides."""
  from rljax.models import TransformerConfig  # pylint: disable=g-import-not-at-top
  presets = {
      'micro': dict(d_model=128, num_layers=2, num_heads=4, ffn_dim=512),  # 0.53M params
      'small': dict(d_model=192, num_layers=4, num_heads=4, ffn_dim=768),
      'tiny': dict(d_model=256, num_layers=4, num_heads=4, ffn_dim=1024),
  }
  kw = dict(presets[config.model])
  for name in ('d_model', 'num_layers', 'num_heads', 'ffn_dim'):
    if getattr(config, name):
      kw[name] = getattr(config, name)
  if kw['d_model'] % kw['num_heads']:
    raise ValueError(f'--d_model={kw["d_model"]} must be a multiple of '
                     f'--num_heads={kw["num_heads"]}')
  return TransformerConfig.tiny(
      vocab_size=vocab_size, d_model=kw['d_model'], num_layers=kw['num_layers'],
      num_heads=kw['num_heads'], num_kv_heads=kw['num_heads'],
      head_dim=kw['d_model'] // kw['num_heads'], ffn_dim=kw['ffn_dim'],
      max_seq_len=max(max_seq_len, 16))


def _strip_value(name: str) -> str:
  return name[:-len('/value')] if name.endswith('/value') else name


def _key_data(key):
  return np.asarray(jax.random.key_data(key))



class Run:
  """What one call of `Harness.run` writes to: the metric writer, the evaluations, checkpoints.

  Attributes:
    writer: the metric writer.
    evals: evaluations by name (`before`, `after`, `sft_<step>`, `rl_<step>`), checkpointed.
    wall_before: wall time of the earlier runs this one resumes.
  """

  def __init__(self, harness: 'Harness', writer, evals: dict[str, Any], wall_before: float):
    self.harness = harness
    self.writer = writer
    self.evals = evals
    self.wall_before = wall_before
    self._t_start = time.perf_counter()

  def wall_time(self) -> float:
    return self.wall_before + time.perf_counter() - self._t_start

  def evaluate(self, name: str, step: int, params) -> dict[str, float]:
    """Evaluates `params`, records the result as `evals[name]` and writes it at `step`."""
    e = self.harness.evaluate(params)
    self.evals[name] = e
    self.writer.write_scalars(step, e)
    return e

  def save(self, step: int, state: dict[str, Any], phase: str) -> None:
    self.writer.flush()  # Records up to this step are on disk before the checkpoint is.
    meta = {'phase': phase, 'layout': 'rl' if 'ref_params' in state else 'sft',
            'step': int(step), 'evals': self.evals, 'wall_time': self.wall_time()}
    self.harness.checkpointer.save(step, state, meta)


class Harness:
  """Everything a run holds; `train_and_evaluate` drives it. Usable step by step in notebooks."""

  def __init__(self, config: Config, workdir: str):
    self.config = config.validate()
    self.workdir = os.path.abspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    c = config
    self.mesh = mesh_lib.make_mesh(c.mesh_data, c.mesh_fsdp, c.mesh_tensor)
    self.data = build_data(c, self.workdir)
    self.tok = self.data.tok
    self.base_key = jax.random.key(c.seed)
    model = self._policy()
    self.model_config = model.config
    graphdef, params = nnx.split(model)
    self.graphdef = graphdef
    self.param_shardings = mesh_lib.param_shardings(params, self.mesh)
    self.init_params = jax.device_put(params, self.param_shardings)
    if c.init_from_workdir:
      self.init_params = self._params_from_workdir(c.init_from_workdir)
    self.sft_tx = ts_lib.make_optimizer(c.optimizer_config('sft'))
    self.rl_tx = ts_lib.make_optimizer(c.optimizer_config('rl'))
    self.loss_config = c.loss_config()
    self._sft_step = None
    self._rl_update = None
    self._samplers: dict[Any, Any] = {}
    self.curriculum = self._curriculum() if c.rl_steps else None
    self.checkpointer = ckpt_lib.Checkpointer(os.path.join(self.workdir, 'checkpoints'),
                                              max_to_keep=c.keep_checkpoints)
    self.total_steps = c.sft_steps + c.rl_steps

  def _policy(self):
    """The initial policy: a Hugging Face checkpoint, or a fresh model of the preset."""
    c = self.config
    if c.init_from_hf:
      from rljax.models import hf  # pylint: disable=g-import-not-at-top
      model = hf.from_hf(c.init_from_hf)
    else:
      from rljax.models import Transformer  # pylint: disable=g-import-not-at-top
      mcfg = model_config(c, self.tok.vocab_size,
                          self.data.prompt_width + self.data.completion_width)
      # Built under one jit (one compilation instead of one per parameter shape).
      model = nnx.eval_shape(lambda: Transformer(mcfg, rngs=nnx.Rngs(c.seed)))
      graphdef = nnx.graphdef(model)
      state = jax.jit(lambda: nnx.state(Transformer(mcfg, rngs=nnx.Rngs(c.seed))))()
      model = nnx.merge(graphdef, state)
    if self.tok.vocab_size > model.config.vocab_size:
      raise ValueError(f'the tokenizer has {self.tok.vocab_size} ids but the policy only '
                       f'{model.config.vocab_size} (with --init_from_hf, pass --hf_tokenizer)')
    if self.tok.eos_id is None:
      raise ValueError('the tokenizer has no end-of-sequence token, which ends completions')
    return model

  def _curriculum(self):
    """The prompt sampler over the RL pool (one arm per pool prompt)."""
    from rljax.data import curricula  # pylint: disable=g-import-not-at-top
    c = self.config
    return curricula.make_sampler(c.curriculum, max(len(self.data.pool_prompts), 1),
                                  group_size=c.group_size, **c.curriculum_kwargs)

  # -------------------------------------------------------------------- jitted functions

  @property
  def sft_step(self):
    if self._sft_step is None:
      self._sft_step = ts_lib.make_sft_step(self.graphdef, self.sft_tx)
    return self._sft_step

  @property
  def rl_update(self):
    if self._rl_update is None:
      c = self.config
      self._rl_update = ts_lib.make_rl_update(
          self.graphdef, self.rl_tx, self.loss_config, group_size=c.group_size,
          num_epochs=c.num_epochs, num_minibatches=c.num_minibatches,
          max_new_tokens=c.max_new_tokens)
    return self._rl_update

  def sampler(self, temperature: float, group_size: int = 1):
    """Jitted `(params, prompt_ids, prompt_mask, key) -> sampling.Rollout` at `temperature`.

    With `group_size=G` each prompt row is sampled G times (one shared prefill per prompt).
    """
    c = self.config
    opts = dict(max_new_tokens=c.max_new_tokens, temperature=float(temperature),
                group_size=int(group_size),
                top_k=c.top_k or None, top_p=c.top_p if c.top_p < 1.0 else None,
                min_p=c.min_p or None, stop_tokens=(int(self.tok.eos_id),),
                pad_id=int(self.tok.pad_id))
    if temperature == 0:
      opts.update(top_k=None, top_p=None, min_p=None)
    cache_key = tuple(sorted(opts.items()))
    if cache_key not in self._samplers:
      from rljax.sampling.sampler import sample_fn  # pylint: disable=g-import-not-at-top
      fn = functools.partial(sample_fn, self.graphdef, **opts)
      self._samplers[cache_key] = jax.jit(lambda p, t, m, k: fn(p, t, m, k))
    return self._samplers[cache_key]

  def evaluate(self, params) -> dict[str, float]:
    """Greedy accuracy and sampled pass@1 / pass@n on the held-out prompts."""
    c = self.config
    return evaluation.evaluate(
        self.sampler, params, self.data, jax.random.fold_in(self.base_key, _EVAL_STREAM),
        num_samples=c.eval_samples, temperature=c.eval_temperature or c.temperature,
        chunk=c.batch_size, mesh=self.mesh)

  def close(self) -> None:
    """Waits for pending checkpoint writes and releases the checkpoint manager."""
    self.checkpointer.close()

  def _params_from_workdir(self, workdir: str):
    """The parameters of the latest checkpoint of another run (`--init_from_workdir`)."""
    source = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
    restored = source.restore(None)
    source.close()
    if restored is None:
      raise ValueError(f'--init_from_workdir={workdir!r} has no checkpoint')
    saved = {_strip_value(mesh_lib._path_str(p)): x  # pylint: disable=protected-access
             for p, x in jax.tree_util.tree_leaves_with_path(restored[1]['train']['params'])}

    def take(path, x):
      name = _strip_value(mesh_lib._path_str(path))  # pylint: disable=protected-access
      if name not in saved or saved[name].shape != x.shape:
        raise ValueError(f'--init_from_workdir={workdir!r}: parameter {name} '
                         f'{x.shape} is missing or has another shape there (same model flags?)')
      return jnp.asarray(saved[name], x.dtype)

    params = jax.tree_util.tree_map_with_path(take, self.init_params)
    return jax.device_put(params, self.param_shardings)

  # -------------------------------------------------------------------- state

  def _state_template(self, meta: dict[str, Any]):
    params = self.init_params
    if meta.get('layout', 'sft') == 'sft':
      train = ts_lib.init_train_state(params, self.sft_tx, self.mesh)
      return {'train': train, 'rng': _key_data(self.base_key)}
    train = ts_lib.init_train_state(params, self.rl_tx, self.mesh)
    return {'train': train, 'ref_params': params, 'curriculum': self.curriculum.init(),
            'rng': _key_data(self.base_key), **self._stale_policies(params)}

  def _enter_rl(self, params) -> dict[str, Any]:
    ref = jax.device_put(jax.tree.map(jnp.copy, params), self.param_shardings)
    return {'train': ts_lib.init_train_state(params, self.rl_tx, self.mesh), 'ref_params': ref,
            'curriculum': self.curriculum.init(), 'rng': _key_data(self.base_key),
            **self._stale_policies(params)}

  def _stale_policies(self, params) -> dict[str, Any]:
    """`{'stale': [k copies of params]}` for --rollout_staleness=k > 0, else `{}`.

    The list holds the policies of the last k RL steps, oldest first (the RL start's until k
    steps have run); it is checkpointed with the state, so a resumed run samples from the same
    stale policies.
    """
    k = self.config.rollout_staleness
    if not k:
      return {}
    return {'stale': [jax.device_put(jax.tree.map(jnp.copy, params), self.param_shardings)
                      for _ in range(k)]}

  def _restore(self) -> tuple[int, dict[str, Any], str, dict[str, Any], bool]:
    """`(step, state, phase, meta, resumed)` of the workdir's checkpoint, or of a fresh start."""
    restored = self.checkpointer.restore(self._state_template)
    if restored is None:
      phase = 'sft' if self.config.sft_steps else 'rl'
      if phase == 'rl':
        state = self._enter_rl(self.init_params)
      else:
        state = {'train': ts_lib.init_train_state(self.init_params, self.sft_tx, self.mesh),
                 'rng': _key_data(self.base_key)}
      return 0, state, phase, {}, False
    step, state, meta = restored
    if not np.array_equal(np.asarray(state['rng']), _key_data(self.base_key)):
      raise ValueError('the checkpoint in this workdir was written with another --seed')
    logger.info('resumed from step %d (%s)', step, meta.get('phase', 'sft'))
    return step, state, meta.get('phase', 'sft'), meta, True

  def _open_run(self, step: int, meta: dict[str, Any], resumed: bool) -> Run:
    c = self.config
    writer = metrics_lib.create_default_writer(
        self.workdir, total_steps=self.total_steps, console=c.console,
        tensorboard=c.tensorboard, resume_step=step if resumed else None)
    if not resumed:
      with open(os.path.join(self.workdir, 'config.json'), 'w') as f:
        json.dump(dataclasses.asdict(c), f, indent=1)
      writer.write_text(0, f'policy: {self.model_config}')
    return Run(self, writer, dict(meta.get('evals', {})), float(meta.get('wall_time', 0.0)))

  # -------------------------------------------------------------------- the run

  def run(self) -> dict[str, Any]:
    """Runs (or resumes) every phase, writes `summary.json` and returns the summary."""
    c = self.config
    step, state, phase, meta, resumed = self._restore()
    run = self._open_run(step, meta, resumed)
    with jax.set_mesh(self.mesh):
      if phase == 'sft':
        state, step = run_sft(self, run, state, step)
        before = run.evaluate('before', step, state['train'].params)
        run.writer.write_text(step, 'warm start: ' + evaluation.format_eval(before))
        if c.rl_steps:
          state, phase = self._enter_rl(state['train'].params), 'rl'
        else:
          phase = 'done'
        run.save(step, state, phase)
      elif phase == 'rl' and not resumed:
        # No warm start in this run: the initial policy is the "before".
        before = run.evaluate('before', step, state['train'].params)
        run.writer.write_text(step, 'initial policy: ' + evaluation.format_eval(before))
        run.save(step, state, phase)
      if phase == 'rl':
        rl_key = jax.random.fold_in(self.base_key, _RL_STREAM)
        state, step = run_rl(self, run, state, step, rl_key)
        run.evaluate('after', step, state['train'].params)
        run.save(step, state, 'done')
    self.checkpointer.close()
    summary = self._summary(run.evals, run.wall_time())
    with open(os.path.join(self.workdir, 'summary.json'), 'w') as f:
      json.dump(summary, f, indent=1)
    run.writer.write_text(step, summary['text'])  # The console writer prints it.
    run.writer.close()
    self.final_state = state
    return summary

  def _summary(self, evals, wall_time) -> dict[str, Any]:
    before, after = evals.get('before'), evals.get('after')
    lines = []
    if before and after:
      lines.append(f'held-out ({len(self.data.eval_prompts)} prompts)   warm start -> after RL')
      for k in sorted(before):
        if k == 'eval/time':
          continue
        lines.append(f'  {k:<24s} {before[k]:8.4f} -> {after[k]:8.4f}  '
                     f'({after[k] - before[k]:+.4f})')
    elif before:
      lines.append(f'held-out ({len(self.data.eval_prompts)} prompts) after warm start: '
                   + evaluation.format_eval(before))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_time = usage.ru_utime + usage.ru_stime
    lines.append(f'wall time {wall_time:.1f} s (this process: {cpu_time:.0f} s of CPU time)')
    return {'evals': evals, 'before': before, 'after': after, 'wall_time': wall_time,
            'process_cpu_time': cpu_time, 'text': '\n'.join(lines)}


def train_and_evaluate(config: Config, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) the experiment `config` in `workdir`; returns the summary dict.

  The summary holds the held-out evaluations `before` (after the warm start) and `after` (after
  RL), every intermediate evaluation, the wall time, and a printable `text`.
  """
  return Harness(config, workdir).run()
