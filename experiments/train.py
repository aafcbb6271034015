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

A workdir that holds a run continues it: from its latest checkpoint, refused (one line listing
the flags) when its `config.json` differs in a flag that changes the run, unless `--override`
(`experiments.continuation`); a finished run given a larger `--rl_steps` trains the extra steps
and redoes the "after" evaluation at the new end; one given the same flags reprints its summary.

With `--lora_rank > 0` both phases train LoRA adapters (`rljax.models.lora`) on a frozen base:
the train state, the reference policy (a copy of the adapters at the start of RL; B = 0 without
a warm start, i.e. the base itself) and the checkpoints hold adapters only, and the base is
rebuilt from the seed or `--init_from_hf` when a run resumes. `python -m experiments.export`
writes the merged policy as a Hugging Face checkpoint.

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

from experiments import continuation
from experiments import evaluation
from experiments.config import Config
from experiments.config import FlagValueError
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
    raise FlagValueError(f'--d_model={kw["d_model"]} must be a multiple of '
                         f'--num_heads={kw["num_heads"]}')
  return TransformerConfig.tiny(
      vocab_size=vocab_size, d_model=kw['d_model'], num_layers=kw['num_layers'],
      num_heads=kw['num_heads'], num_kv_heads=kw['num_heads'],
      head_dim=kw['d_model'] // kw['num_heads'], ffn_dim=kw['ffn_dim'],
      max_seq_len=max(max_seq_len, 16), **precision_overrides(config))


def precision_overrides(config: Config) -> dict[str, str]:
  """The `TransformerConfig` fields of `--param_dtype`, `--compute_dtype` and `--remat`."""
  return dict(param_dtype=config.param_dtype, compute_dtype=config.compute_dtype,
              remat=config.remat)


def _check_devices(config: Config) -> None:
  """The mesh fits the devices (one line naming the flags, before a mesh is built)."""
  c = config
  n, have = c.mesh_data * c.mesh_fsdp * c.mesh_tensor, jax.device_count()
  on_cpu = jax.default_backend() == 'cpu'
  if on_cpu and c.cpu_devices and jax.local_device_count() != c.cpu_devices:
    raise FlagValueError(
        f'--cpu_devices={c.cpu_devices}, but JAX started with {jax.local_device_count()} CPU '
        'devices: the count is set before JAX starts (python -m experiments.launch does; a '
        'script calls experiments.xla_defaults.set_cpu_devices before touching a device)')
  if on_cpu and c.cpu_devices > -(-n // jax.process_count()):
    logger.warning('--cpu_devices=%d, but the mesh (--mesh_data x --mesh_fsdp x --mesh_tensor) '
                   'uses %d of them: the others stay idle', c.cpu_devices, n)
  if n > have:
    per_process = -(-n // jax.process_count())  # --cpu_devices counts one process's devices
    hint = (f' (on CPU, --cpu_devices={per_process} makes that many'
            f'{" per process" if jax.process_count() > 1 else ""})' if on_cpu else '')
    raise FlagValueError(f'--mesh_data={c.mesh_data} x --mesh_fsdp={c.mesh_fsdp} x '
                         f'--mesh_tensor={c.mesh_tensor} = {n} devices, but there are only '
                         f'{have} {jax.default_backend()} devices{hint}')


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
    c = self.config = config.validate()
    self.workdir = os.path.abspath(workdir)
    # Checked before anything is built: a refused workdir or a mesh too large fails at once.
    self.config_changes = continuation.check_workdir(self.workdir, c)
    _check_devices(c)
    if c.hf_tokenizer:
      logger.warning('--hf_tokenizer is deprecated and has no effect: with --init_from_hf the '
                     "checkpoint's tokenizer is the default")
    os.makedirs(self.workdir, exist_ok=True)
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
    self.frozen, self.combine = None, None
    if c.lora_rank:
      self._adapt(model)
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
      model = self._hf_policy()
    else:
      from rljax.models import Transformer  # pylint: disable=g-import-not-at-top
      mcfg = model_config(c, self.tok.vocab_size,
                          self.data.prompt_width + self.data.completion_width)
      # Built under one jit (one compilation instead of one per parameter shape).
      model = nnx.eval_shape(lambda: Transformer(mcfg, rngs=nnx.Rngs(c.seed)))
      graphdef = nnx.graphdef(model)
      state = jax.jit(lambda: nnx.state(Transformer(mcfg, rngs=nnx.Rngs(c.seed))))()
      model = nnx.merge(graphdef, state)
    self._check_vocab(model.config.vocab_size)
    return model

  def _hf_policy(self):
    """The `--init_from_hf` checkpoint, its vocabulary checked against the tokenizer first."""
    from rljax.models import hf  # pylint: disable=g-import-not-at-top
    path = self.config.init_from_hf
    try:
      self._check_vocab(hf.config_from_hf(path).vocab_size)
      return hf.from_hf(path, **precision_overrides(self.config))
    except (OSError, ValueError) as e:
      if isinstance(e, FlagValueError):
        raise
      raise FlagValueError(f'--init_from_hf={path!r}: {e}') from None

  def _check_vocab(self, model_vocab: int) -> None:
    n = self.tok.vocab_size
    if n <= model_vocab:
      return
    c = self.config
    source = (f'--tokenizer={c.tokenizer!r}' if c.tokenizer
              else "--tokenizer (unset: the checkpoint's own)")
    if not c.init_from_hf:
      raise FlagValueError(f'{source}: the tokenizer has {n} ids but the model only '
                           f'{model_vocab} embeddings')
    raise FlagValueError(f'{source}: the tokenizer has {n} ids but the model of --init_from_hf='
                         f'{c.init_from_hf!r} only {model_vocab} embeddings (ids past the table '
                         'would index nothing); pass a --tokenizer made for that checkpoint')

  def _adapt(self, model) -> None:
    """LoRA: the base parameters become `frozen`, the trained `init_params` the adapters.

    Every jitted function gets `frozen` as an argument beside the adapters and runs on
    `combine(adapters, frozen)` (the merged weights); the train state, the reference policy
    and the checkpoints hold adapters only.
    """
    from rljax.models import lora  # pylint: disable=g-import-not-at-top
    c = self.config
    try:
      lcfg = lora.LoraConfig(rank=c.lora_rank, alpha=c.lora_alpha, targets=c.lora_targets)
      adapters = lora.init_adapters(model, lcfg, seed=c.seed)
    except ValueError as e:
      raise FlagValueError(f'--lora_targets={c.lora_targets!r}: {e}') from None
    self.frozen = self.init_params
    self.combine = functools.partial(lora.merge, scale=lcfg.scale)
    # The trained parameters (and their copies: reference, stale policies) are the adapters.
    self.param_shardings = mesh_lib.param_shardings(adapters, self.mesh)
    self.init_params = jax.device_put(adapters, self.param_shardings)
    logger.info('LoRA rank %d: %d adapter parameters on %d base parameters', c.lora_rank,
                lora.num_params(adapters), lora.num_params(self.frozen))

  def _with_frozen(self, fn):
    """`fn` with the frozen base bound (LoRA), else `fn` itself."""
    return fn if self.frozen is None else functools.partial(fn, frozen=self.frozen)

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
      self._sft_step = self._with_frozen(
          ts_lib.make_sft_step(self.graphdef, self.sft_tx, combine=self.combine))
    return self._sft_step

  @property
  def rl_update(self):
    if self._rl_update is None:
      c = self.config
      self._rl_update = self._with_frozen(ts_lib.make_rl_update(
          self.graphdef, self.rl_tx, self.loss_config, group_size=c.group_size,
          num_epochs=c.num_epochs, num_minibatches=c.num_minibatches,
          max_new_tokens=c.max_new_tokens, combine=self.combine))
    return self._rl_update

  def sampler(self, temperature: float, group_size: int = 1):
    """Jitted `(params, prompt_ids, prompt_mask, key) -> sampling.Rollout` at `temperature`.

    With `group_size=G` each prompt row is sampled G times (one shared prefill per prompt).
    """
    c = self.config
    opts = dict(max_new_tokens=c.max_new_tokens, temperature=float(temperature),
                group_size=int(group_size),
                top_k=c.top_k or None, top_p=c.top_p if c.top_p < 1.0 else None,
                min_p=c.min_p or None, stop_tokens=tuple(int(i) for i in self.tok.stop_ids),
                pad_id=int(self.tok.pad_id))
    if temperature == 0:
      opts.update(top_k=None, top_p=None, min_p=None)
    cache_key = tuple(sorted(opts.items()))
    if cache_key not in self._samplers:
      from rljax.sampling.sampler import sample_fn  # pylint: disable=g-import-not-at-top
      fn = functools.partial(sample_fn, self.graphdef, **opts)
      if self.combine is None:
        self._samplers[cache_key] = jax.jit(lambda p, t, m, k: fn(p, t, m, k))
      else:  # LoRA: samples from the merged weights, built inside the jitted call.
        jitted = jax.jit(lambda p, t, m, k, frozen: fn(self.combine(p, frozen), t, m, k))
        self._samplers[cache_key] = self._with_frozen(jitted)
    return self._samplers[cache_key]

  def policy_params(self, params):
    """The full model state of `params` (the adapters merged into the base with LoRA)."""
    if self.combine is None:
      return params
    return jax.jit(self.combine)(params, self.frozen)

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
    source_config = os.path.join(workdir, 'config.json')
    if os.path.isfile(source_config):
      with open(source_config) as f:
        if json.load(f).get('lora_rank'):
          raise FlagValueError(
              f'--init_from_workdir={workdir!r} is a LoRA run (its checkpoints hold adapters '
              'only); export it with python -m experiments.export and pass the export as '
              '--init_from_hf')
    source = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
    restored = source.restore(None)
    source.close()
    if restored is None:
      raise FlagValueError(f'--init_from_workdir={workdir!r} has no checkpoint')
    saved = {_strip_value(mesh_lib._path_str(p)): x  # pylint: disable=protected-access
             for p, x in jax.tree_util.tree_leaves_with_path(restored[1]['train']['params'])}

    def take(path, x):
      name = _strip_value(mesh_lib._path_str(path))  # pylint: disable=protected-access
      if name not in saved or saved[name].shape != x.shape:
        raise FlagValueError(f'--init_from_workdir={workdir!r}: parameter {name} {x.shape} '
                             'is missing or has another shape there (same model flags?)')
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
    return {'train': train, 'ref_params': params,
            'curriculum': mesh_lib.replicate(self.curriculum.init(), self.mesh),
            'rng': _key_data(self.base_key), **self._stale_policies(params)}

  def _enter_rl(self, params) -> dict[str, Any]:
    ref = jax.device_put(jax.tree.map(jnp.copy, params), self.param_shardings)
    return {'train': ts_lib.init_train_state(params, self.rl_tx, self.mesh), 'ref_params': ref,
            'curriculum': mesh_lib.replicate(self.curriculum.init(), self.mesh),
            'rng': _key_data(self.base_key),
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
    latest = self.checkpointer.latest_step()
    if latest is not None and latest > self.total_steps:
      raise FlagValueError(f'the workdir is at step {latest}, past --sft_steps + --rl_steps = '
                           f'{self.total_steps}; --rl_steps can only grow')
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
    # Rewritten on every start: a continuation may have grown --rl_steps, changed a flag of
    # continuation.RUN_INVARIANT_FLAGS or (with --override) others, and the next one compares
    # with this run.
    if metrics_lib.is_writer_process():
      with open(os.path.join(self.workdir, continuation.CONFIG_NAME), 'w') as f:
        json.dump(dataclasses.asdict(c), f, indent=1)
    if not resumed:
      writer.write_text(0, f'policy: {self.model_config}')
    elif self.config_changes:
      writer.write_text(step, 'continued with --override: '
                        + continuation.format_diffs(self.config_changes))
    return Run(self, writer, dict(meta.get('evals', {})), float(meta.get('wall_time', 0.0)))

  def _continue_done(self, state: dict[str, Any], meta: dict[str, Any], step: int):
    """A finished run given more --rl_steps: RL goes on from its final state."""
    logger.warning('the run in %s finished at step %d; continuing to step %d (--rl_steps=%d)',
                   self.workdir, step, self.total_steps, self.config.rl_steps)
    if meta.get('layout', 'sft') == 'sft':  # It had no RL phase: RL starts from its warm start.
      state = self._enter_rl(state['train'].params)
    return state, 'rl'

  # -------------------------------------------------------------------- the run

  def run(self) -> dict[str, Any]:
    """Runs (or resumes) every phase, writes `summary.json` and returns the summary."""
    c = self.config
    step, state, phase, meta, resumed = self._restore()
    if phase == 'done' and step < self.total_steps:
      state, phase = self._continue_done(state, meta, step)
    elif phase == 'done':
      logger.warning('the run in %s is already complete (step %d); its summary follows',
                     self.workdir, step)
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
    if metrics_lib.is_writer_process():
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
      start = 'warm start' if self.config.sft_steps else 'initial policy'
      lines.append(f'held-out ({len(self.data.eval_prompts)} prompts)   {start} -> after RL')
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
