"""The experiment loop: supervised warm start, then RL with any estimator, with evaluation,
metrics, checkpoints and exact resumption.

`train_and_evaluate(config, workdir)` is what `python -m experiments.launch` calls and what a
notebook calls directly:

    from experiments.config import Config
    from experiments.train import train_and_evaluate
    summary = train_and_evaluate(Config(estimator='gspo', rl_steps=50), '/tmp/run')

Phases (one step counter; steps 1..sft_steps are warm-start steps, the next rl_steps are RL):

1. Warm start (optional): a fresh policy is trained on the task's demonstrations (a fixed set of
   `sft_num_demos`, visited in a seeded order), or the policy is loaded with `--init_from_hf`.
2. Evaluation "before": greedy accuracy and sampled pass@k on the held-out split.
3. RL steps: the curriculum picks `num_prompts` prompts of the pool; the sampler draws
   `group_size` completions of each with behaviour log-probs; the task's verifier gives the
   rewards; the jitted update (`rljax.train.make_rl_update`) takes `num_epochs x num_minibatches`
   optimizer steps on the batch; the warm-start policy is the frozen reference of KL terms.
4. Evaluation every `eval_every` RL steps and at the end ("after"); before/after printed and
   written to `<workdir>/summary.json`.

Determinism: every random draw is keyed by `fold_in(key(seed), phase, step)` and every data
position is a function of the step, so a run restarted from a checkpoint (params, optimizer
state, step, RNG, curriculum state, data position) continues exactly as the uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import resource
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.config import Config
from rljax.train import checkpoint as ckpt_lib
from rljax.train import mesh as mesh_lib
from rljax.train import metrics as metrics_lib
from rljax.train import train_step as ts_lib
from rljax.train.rollout import Rollout

logger = logging.getLogger(__name__)

# Streams of randomness (fold_in constants).
_SFT_STREAM, _RL_STREAM, _EVAL_STREAM, _INIT_STREAM = 1, 2, 3, 4

# Metrics that measure time, not learning (excluded when comparing runs for determinism).
TIMING_KEYS = ('step_time', 'sample_time', 'train_time', 'reward_time', 'tokens_per_sec',
               'eval/time', 'sft/step_time', 'sft/tokens_per_sec', 'wall_time')


# ----------------------------------------------------------------------------- setup helpers


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


def build_tokenizer(config: Config, texts: Sequence[str], workdir: str):
  """Loads `--tokenizer` (a .model path) or trains one on the task's text into the workdir.

  Training is deterministic given the texts, so a resumed run rebuilds the same tokenizer.
  """
  from rljax.data.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  if config.init_from_hf and config.hf_tokenizer:
    from rljax.data import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top
    return tok_lib.HFTokenizer.load(os.path.join(config.init_from_hf, 'tokenizer.json'))
  if config.init_from_workdir:
    return Tokenizer.load(os.path.join(config.init_from_workdir, 'tokenizer.model'))
  if config.tokenizer.endswith('.model'):
    return Tokenizer.load(config.tokenizer)
  prefix = os.path.join(workdir, 'tokenizer')
  if os.path.exists(prefix + '.model'):
    return Tokenizer.load(prefix + '.model')
  return Tokenizer.train(list(texts), vocab_size=config.vocab_size,
                         model_type=config.tokenizer, model_prefix=prefix)


def _encode_prompt(tok, text: str) -> list[int]:
  ids = list(tok.encode(text))
  bos = getattr(tok, 'bos_id', -1)
  if bos is not None and bos >= 0:
    ids = [bos] + ids
  return ids


def encode_prompts(tok, prompts: Sequence[str], width: int) -> tuple[np.ndarray, np.ndarray]:
  """Left-padded prompt ids and mask `[n, width]` (BOS prepended when the tokenizer has one)."""
  ids = np.full((len(prompts), width), tok.pad_id, np.int32)
  mask = np.zeros((len(prompts), width), np.int32)
  for i, p in enumerate(prompts):
    row = _encode_prompt(tok, p)
    if len(row) > width:
      raise ValueError(f'prompt {p!r} has {len(row)} tokens, more than the prompt width {width}')
    ids[i, width - len(row):] = row
    mask[i, width - len(row):] = 1
  return ids, mask


def encode_demonstrations(tok, prompts, demos, prompt_width: int, completion_width: int):
  """SFT sequences `[n, P + N]` (prompt left-padded, demonstration + EOS), and the target mask."""
  p_ids, p_mask = encode_prompts(tok, prompts, prompt_width)
  n = len(prompts)
  c_ids = np.full((n, completion_width), tok.pad_id, np.int32)
  c_mask = np.zeros((n, completion_width), np.int32)
  for i, d in enumerate(demos):
    row = list(tok.encode(d)) + [tok.eos_id]
    if len(row) > completion_width:
      raise ValueError(f'demonstration {d!r} has {len(row)} tokens with EOS, more than '
                       f'--max_new_tokens={completion_width}')
    c_ids[i, :len(row)] = row
    c_mask[i, :len(row)] = 1
  tokens = np.concatenate([p_ids, c_ids], axis=1)
  target = np.concatenate([np.zeros_like(p_mask), c_mask], axis=1)
  input_mask = np.concatenate([p_mask, c_mask], axis=1)
  return tokens, input_mask, target


def decode_completions(tok, tokens: np.ndarray, completion_mask: np.ndarray,
                       prompt_width: int) -> list[str]:
  """Completion texts (stop token removed)."""
  out = []
  eos = tok.eos_id
  for row, m in zip(tokens[:, prompt_width:], completion_mask[:, prompt_width:]):
    ids = [int(t) for t, k in zip(row, m) if k and int(t) != eos]
    out.append(tok.decode(ids))
  return out


def corrupt_demonstrations(examples: Sequence[Any], rate: float, seed: int) -> list[Any]:
  """An imperfect teacher: a `rate` fraction of demonstrations get another problem's answer.

  Which examples are corrupted, and whose demonstration each one receives, is a function of
  `seed`; a demonstration that happens to equal the original is kept (so slightly fewer than
  `rate` are wrong).
  """
  rng = np.random.default_rng([seed, 0x5EED])
  n = len(examples)
  wrong = rng.random(n) < rate
  donors = (np.arange(n) + rng.integers(1, max(n, 2), size=n)) % n
  return [dataclasses.replace(e, demonstration=examples[int(d)].demonstration) if w else e
          for e, w, d in zip(examples, wrong, donors)]


def epoch_batch_indices(num_examples: int, batch_size: int, step: int, seed: int) -> np.ndarray:
  """Indices of SFT batch `step` (0-based): consecutive slices of per-epoch permutations.

  A pure function of (num_examples, batch_size, step, seed), so the data position is the step.
  """
  start = step * batch_size
  out = []
  while len(out) < batch_size:
    epoch, offset = divmod(start + len(out), num_examples)
    perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
    take = min(batch_size - len(out), num_examples - offset)
    out.extend(perm[offset:offset + take].tolist())
  return np.asarray(out, np.int64)


def pass_at_k(n: int, c: np.ndarray, k: int) -> np.ndarray:
  """Unbiased pass@k from n samples with c correct (Chen et al., arXiv 2107.03374)."""
  c = np.asarray(c)
  if n - k < 0:
    raise ValueError(f'pass@{k} needs at least {k} samples, got {n}')
  out = np.ones(c.shape, np.float64)
  nz = n - c >= k
  out[nz] = 1.0 - np.array([math.comb(n - ci, k) / math.comb(n, k) for ci in c[nz]])
  return out


def _strip_value(name: str) -> str:
  return name[:-len('/value')] if name.endswith('/value') else name


def _key_data(key):
  return np.asarray(jax.random.key_data(key))


# ----------------------------------------------------------------------------- the harness


@dataclasses.dataclass
class _Data:
  task: Any
  tok: Any
  prompt_width: int
  completion_width: int
  sft_tokens: Optional[np.ndarray]
  sft_input_mask: Optional[np.ndarray]
  sft_target: Optional[np.ndarray]
  pool_prompts: list[str]
  pool_ids: np.ndarray
  pool_mask: np.ndarray
  eval_prompts: list[str]
  eval_ids: np.ndarray
  eval_mask: np.ndarray


def _build_data(config: Config, workdir: str) -> _Data:
  from rljax.data import tasks  # pylint: disable=g-import-not-at-top
  task = tasks.get_task(config.task, seed=config.seed, **config.task_kwargs)

  def examples(split, num, which):
    levels = config.levels(which)
    if levels is None:
      return task.examples(split, num)
    counts = config.level_counts(which)
    if counts is None:
      counts = [num // len(levels) + (1 if i < num % len(levels) else 0)
                for i in range(len(levels))]
    out = []
    for lvl, k in zip(levels, counts):
      out.extend(task.examples(split, k, level=lvl))
    return out

  def checked(flag, split, num, which):
    try:
      return examples(split, num, which)
    except ValueError as e:
      raise ValueError(f'{flag} (with --{which}_levels={getattr(config, which + "_levels")!r}) '
                       f'asks for more examples than the task has: {e}') from None

  sft_examples = checked('--sft_num_demos', 'train', config.sft_num_demos, 'sft') \
      if config.sft_steps else []
  if config.demo_error_rate > 0 and sft_examples:
    sft_examples = corrupt_demonstrations(sft_examples, config.demo_error_rate, config.seed)
  pool = []
  if config.rl_steps:
    if config.rl_pool_disjoint and sft_examples:
      # Draw extra and drop the demonstrated prompts: RL sees problems the warm start did not.
      seen = {e.prompt for e in sft_examples}
      extra = checked('--rl_pool_size (+ --sft_num_demos, as --rl_pool_disjoint is set)',
                      'train', config.rl_pool_size + len(seen), 'rl')
      pool = [e for e in extra if e.prompt not in seen][:config.rl_pool_size]
    else:
      pool = checked('--rl_pool_size', 'train', config.rl_pool_size, 'rl')
  evals = checked('--eval_num', 'test', config.eval_num, 'eval')
  # The tokenizer's corpus depends on the task only (not on which examples this run uses), so
  # runs that differ in RL flags share the same token ids and hence the same warm start.
  corpus = task.examples('train', 2000, unique=False) + task.examples('test', 200, unique=False)
  texts = [e.prompt + e.demonstration for e in corpus] + [e.prompt + e.answer for e in corpus]
  tok = build_tokenizer(config, texts, workdir)
  all_prompts = [e.prompt for e in sft_examples + pool + evals]
  prompt_width = max(len(_encode_prompt(tok, p)) for p in all_prompts)
  completion_width = config.max_new_tokens
  if sft_examples:
    sft = encode_demonstrations(tok, [e.prompt for e in sft_examples],
                                [e.demonstration for e in sft_examples], prompt_width,
                                completion_width)
  else:
    sft = (None, None, None)
  pool_prompts = [e.prompt for e in pool]
  pool_ids, pool_mask = encode_prompts(tok, pool_prompts or ['?'], prompt_width) \
      if pool_prompts else (np.zeros((0, prompt_width), np.int32),) * 2
  eval_prompts = [e.prompt for e in evals]
  eval_ids, eval_mask = encode_prompts(tok, eval_prompts, prompt_width)
  return _Data(task, tok, prompt_width, completion_width, *sft, pool_prompts, pool_ids,
               pool_mask, eval_prompts, eval_ids, eval_mask)


class Harness:
  """Everything a run holds; `train_and_evaluate` drives it. Usable step by step in notebooks."""

  def __init__(self, config: Config, workdir: str):
    self.config = config.validate()
    self.workdir = os.path.abspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    c = config
    self.mesh = mesh_lib.make_mesh(c.mesh_data, c.mesh_fsdp, c.mesh_tensor)
    self.data = _build_data(c, self.workdir)
    self.tok = self.data.tok
    self.base_key = jax.random.key(c.seed)

    # Policy.
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
    self.model_config = model.config
    if self.tok.vocab_size > model.config.vocab_size:
      raise ValueError(f'the tokenizer has {self.tok.vocab_size} ids but the policy only '
                       f'{model.config.vocab_size} (with --init_from_hf, pass --hf_tokenizer)')
    if self.tok.eos_id is None:
      raise ValueError('the tokenizer has no end-of-sequence token, which ends completions')
    graphdef, params = nnx.split(model)
    self.graphdef = graphdef
    self.param_shardings = mesh_lib.param_shardings(params, self.mesh)
    self.init_params = jax.device_put(params, self.param_shardings)
    if c.init_from_workdir:
      self.init_params = self._params_from_workdir(c.init_from_workdir)

    # Optimizers and steps.
    self.sft_tx = ts_lib.make_optimizer(ts_lib.OptimizerConfig(
        optimizer=c.optimizer, learning_rate=c.sft_learning_rate, schedule=c.sft_schedule,
        warmup_steps=c.sft_warmup_steps, decay_steps=max(c.sft_steps - c.sft_warmup_steps, 0),
        weight_decay=c.weight_decay, b1=c.adam_b1, b2=c.adam_b2,
        max_grad_norm=c.max_grad_norm or None))
    rl_updates = c.rl_steps * c.num_epochs * c.num_minibatches
    self.rl_tx = ts_lib.make_optimizer(ts_lib.OptimizerConfig(
        optimizer=c.optimizer, learning_rate=c.learning_rate, schedule=c.lr_schedule,
        warmup_steps=c.warmup_steps, decay_steps=max(rl_updates - c.warmup_steps, 0),
        weight_decay=c.weight_decay, b1=c.adam_b1, b2=c.adam_b2,
        max_grad_norm=c.max_grad_norm or None))
    self.loss_config = ts_lib.LossConfig(
        estimator=c.estimator,
        advantage=c.advantage or ('given' if c.curriculum == 'reinforce_ada' else None),
        aggregation=c.aggregation or None, max_tokens=c.max_tokens or None,
        temperature=c.temperature, kl_coef=c.kl_coef, kl_estimator=c.kl_estimator,
        entropy_coef=c.entropy_coef, is_correction=c.is_correction, is_cap=c.is_cap,
        is_level=c.is_level, old_logp=c.old_logp, loss_kwargs=c.loss_kwargs())
    self._sft_step = None
    self._rl_update = None
    self._samplers: dict[Any, Any] = {}

    # Curriculum over the RL pool.
    from rljax.data import curricula  # pylint: disable=g-import-not-at-top
    kwargs = dict(c.curriculum_kwargs)
    if c.curriculum == 'reinforce_ada':
      kwargs.setdefault('group_size', c.group_size)
      if kwargs['group_size'] != c.group_size:
        raise ValueError('--curriculum_args group_size must equal --group_size')
    self.curriculum = curricula.make_sampler(
        c.curriculum, max(len(self.data.pool_prompts), 1), **kwargs) if c.rl_steps else None

    self.checkpointer = ckpt_lib.Checkpointer(os.path.join(self.workdir, 'checkpoints'),
                                              max_to_keep=c.keep_checkpoints)
    self.total_steps = c.sft_steps + c.rl_steps

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

  def sampler(self, temperature: float):
    """Jitted `(params, prompt_ids, prompt_mask, key) -> sampling.Rollout` at `temperature`."""
    c = self.config
    opts = dict(max_new_tokens=c.max_new_tokens, temperature=float(temperature),
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

  # -------------------------------------------------------------------- evaluation

  def evaluate(self, params) -> dict[str, float]:
    """Greedy accuracy and sampled pass@1 / pass@n on the held-out prompts."""
    c = self.config
    t0 = time.perf_counter()
    d = self.data
    n = len(d.eval_prompts)
    chunk = c.batch_size
    key = jax.random.fold_in(self.base_key, _EVAL_STREAM)

    def run(ids, mask, temperature, key):
      rows = ids.shape[0]
      pad = (-rows) % chunk
      ids = np.concatenate([ids, np.repeat(ids[-1:], pad, 0)])
      mask = np.concatenate([mask, np.repeat(mask[-1:], pad, 0)])
      texts, lengths, stopped = [], [], []
      fn = self.sampler(temperature)
      for i in range(0, rows + pad, chunk):
        batch = mesh_lib.shard_batch((ids[i:i + chunk], mask[i:i + chunk]), self.mesh)
        out = fn(params, batch[0], batch[1], jax.random.fold_in(key, i))
        out = jax.device_get(out)
        texts += decode_completions(self.tok, out.tokens, out.completion_mask, d.prompt_width)
        lengths += list(out.lengths)
        stopped += list(out.stopped)
      return texts[:rows], np.asarray(lengths[:rows]), np.asarray(stopped[:rows])

    greedy, g_len, g_stop = run(d.eval_ids, d.eval_mask, 0.0, key)
    g_correct = np.array([d.task.is_correct(p, t) for p, t in zip(d.eval_prompts, greedy)])
    k = c.eval_samples
    temperature = c.eval_temperature or c.temperature
    s_ids = np.repeat(d.eval_ids, k, axis=0)
    s_mask = np.repeat(d.eval_mask, k, axis=0)
    sampled, s_len, s_stop = run(s_ids, s_mask, temperature, jax.random.fold_in(key, 1))
    s_prompts = np.repeat(np.asarray(d.eval_prompts, dtype=object), k)
    s_correct = np.array([d.task.is_correct(p, t) for p, t in zip(s_prompts, sampled)])
    per_prompt = s_correct.reshape(n, k).sum(1)
    out = {
        'eval/greedy_accuracy': float(g_correct.mean()),
        'eval/sampled_pass@1': float(pass_at_k(k, per_prompt, 1).mean()),
        f'eval/pass@{k}': float(pass_at_k(k, per_prompt, k).mean()),
        'eval/greedy_length': float(g_len.mean()),
        'eval/sampled_length': float(s_len.mean()),
        'eval/truncation_rate': float(1.0 - s_stop.mean()),
        'eval/time': time.perf_counter() - t0,
    }
    return out

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

  # -------------------------------------------------------------------- state templates

  def _state_template(self, meta: dict[str, Any]):
    params = self.init_params
    if meta.get('layout', 'sft') == 'sft':
      train = ts_lib.init_train_state(params, self.sft_tx, self.mesh)
      return {'train': train, 'rng': _key_data(self.base_key)}
    train = ts_lib.init_train_state(params, self.rl_tx, self.mesh)
    return {'train': train, 'ref_params': params, 'curriculum': self.curriculum.init(),
            'rng': _key_data(self.base_key)}

  # -------------------------------------------------------------------- the run

  def run(self) -> dict[str, Any]:
    c = self.config
    d = self.data
    restored = self.checkpointer.restore(self._state_template)
    summary_meta: dict[str, Any] = {}
    if restored is None:
      step, phase = 0, ('sft' if c.sft_steps else 'rl')
      state = {'train': ts_lib.init_train_state(self.init_params, self.sft_tx, self.mesh),
               'rng': _key_data(self.base_key)}
      if phase == 'rl':
        state = self._enter_rl(state['train'].params)
      resume_step = None
    else:
      step, state, summary_meta = restored
      phase = summary_meta.get('phase', 'sft')
      resume_step = step
      logger.info('resumed from step %d (%s)', step, phase)
    # No warm start in this run: evaluate the initial policy as "before".
    need_before = restored is None and phase == 'rl'
    if not np.array_equal(np.asarray(state['rng']), _key_data(self.base_key)):
      raise ValueError('the checkpoint in this workdir was written with another --seed')

    writer = metrics_lib.create_default_writer(
        self.workdir, total_steps=self.total_steps, console=c.console,
        tensorboard=c.tensorboard, resume_step=resume_step)
    if resume_step is None:
      with open(os.path.join(self.workdir, 'config.json'), 'w') as f:
        json.dump(dataclasses.asdict(c), f, indent=1)
      writer.write_text(0, f'policy: {self.model_config}')
    wall_before = float(summary_meta.get('wall_time', 0.0))
    t_start = time.perf_counter()
    evals: dict[str, Any] = dict(summary_meta.get('evals', {}))

    def save(step, state, phase):
      writer.flush()  # Records up to this step are on disk before the checkpoint is.
      meta = {'phase': phase, 'layout': 'rl' if 'ref_params' in state else 'sft',
              'step': int(step), 'evals': evals,
              'wall_time': wall_before + time.perf_counter() - t_start,
              'data_position': int(step)}
      self.checkpointer.save(step, state, meta)

    with jax.set_mesh(self.mesh):
      # ---------------- warm start
      t_log, step_log, sft_tokens = time.perf_counter(), step, 0
      while phase == 'sft' and step < c.sft_steps:
        idx = epoch_batch_indices(d.sft_tokens.shape[0], c.sft_batch_size, step, c.seed)
        batch = mesh_lib.shard_batch(
            (d.sft_tokens[idx], d.sft_input_mask[idx], d.sft_target[idx]), self.mesh)
        train, m = self.sft_step(state['train'], *batch)
        state = dict(state, train=train)
        step += 1
        sft_tokens += int(np.sum(d.sft_input_mask[idx]))
        if step % c.log_every == 0 or step == c.sft_steps:
          m = jax.device_get(m)  # Waits for the queued steps: time per step is an average.
          dt = time.perf_counter() - t_log
          m['sft/step_time'] = dt / max(step - step_log, 1)
          m['sft/tokens_per_sec'] = sft_tokens / max(dt, 1e-9)
          writer.write_scalars(step, m)
          t_log, step_log, sft_tokens = time.perf_counter(), step, 0
        if c.sft_eval_every and step % c.sft_eval_every == 0 and step < c.sft_steps:
          e = self.evaluate(state['train'].params)
          evals[f'sft_{step}'] = e
          writer.write_scalars(step, e)
          t_log, step_log, sft_tokens = time.perf_counter(), step, 0
        if step == c.sft_steps:
          break
        if c.checkpoint_every and step % c.checkpoint_every == 0:
          save(step, state, 'sft')

      if phase == 'sft':
        # End of the warm start: evaluate ("before") and switch to RL.
        before = self.evaluate(state['train'].params)
        evals['before'] = before
        writer.write_scalars(step, before)
        writer.write_text(step, 'warm start: ' + _fmt_eval(before))
        if c.rl_steps:
          state = self._enter_rl(state['train'].params)
          phase = 'rl'
        else:
          phase = 'done'
        save(step, state, phase)

      if need_before:
        evals['before'] = self.evaluate(state['train'].params)
        writer.write_scalars(step, evals['before'])
        writer.write_text(step, 'initial policy: ' + _fmt_eval(evals['before']))
        save(step, state, phase)

      # ---------------- RL
      rl_key = jax.random.fold_in(self.base_key, _RL_STREAM)
      while phase == 'rl' and step < self.total_steps:
        rl_step = step - c.sft_steps
        k_cur, k_sample, k_update = jax.random.split(jax.random.fold_in(rl_key, rl_step), 3)
        t0 = time.perf_counter()
        arms, cstate = self.curriculum.sample(state['curriculum'], k_cur, c.num_prompts)
        arms = np.asarray(arms)
        if c.curriculum == 'reinforce_ada':
          batch, host, rewards, correct, ada_metrics, t1 = self._reinforce_ada_batch(
              state['train'].params, arms, k_sample)
        else:
          sample, host, rewards, correct = self._rollouts(
              state['train'].params, arms, c.group_size, k_sample)
          t1 = time.perf_counter()
          batch = Rollout.from_sample(sample, rewards, group_size=c.group_size)
          ada_metrics = {}
        t2 = time.perf_counter()
        batch = mesh_lib.shard_batch(batch, self.mesh)
        train, m = self.rl_update(state['train'], state['ref_params'], batch, k_update)
        cstate = self.curriculum.update(cstate, jnp.asarray(arms),
                                        jnp.asarray(rewards.reshape(-1, c.group_size)))
        state = dict(state, train=train, curriculum=cstate)
        step += 1
        m = {k: float(v) for k, v in jax.device_get(m).items()}  # Also ends this step's work.
        t3 = time.perf_counter()
        if (step - c.sft_steps) % c.log_every == 0 or step == self.total_steps:
          m.update(ada_metrics)
          m.update({
              'pass_rate': float(correct.mean()),
              'sample_time': t1 - t0, 'reward_time': t2 - t1, 'train_time': t3 - t2,
              'step_time': t3 - t0,
              'tokens_per_sec': float(host.lengths.sum()) / max(t3 - t0, 1e-9),
          })
          writer.write_scalars(step, m)
        rl_done = step - c.sft_steps
        if c.eval_every and rl_done % c.eval_every == 0 and step < self.total_steps:
          e = self.evaluate(state['train'].params)
          evals[f'rl_{rl_done}'] = e
          writer.write_scalars(step, e)
        if step < self.total_steps and c.checkpoint_every and step % c.checkpoint_every == 0:
          save(step, state, 'rl')

      if phase == 'rl':
        after = self.evaluate(state['train'].params)
        evals['after'] = after
        writer.write_scalars(step, after)
        phase = 'done'
        save(step, state, phase)
      elif phase == 'done' and 'after' not in evals and c.rl_steps == 0:
        pass

    self.checkpointer.close()
    summary = self._summary(evals, wall_before + time.perf_counter() - t_start)
    with open(os.path.join(self.workdir, 'summary.json'), 'w') as f:
      json.dump(summary, f, indent=1)
    writer.write_text(step, summary['text'])  # The console writer prints it.
    writer.close()
    self.final_state = state
    return summary

  def _rollouts(self, params, arms: np.ndarray, per_prompt: int, key):
    """Samples `per_prompt` completions of each pool prompt `arms`; host-side rewards."""
    c, d = self.config, self.data
    ids = np.repeat(d.pool_ids[arms], per_prompt, axis=0)
    mask = np.repeat(d.pool_mask[arms], per_prompt, axis=0)
    ids, mask = mesh_lib.shard_batch((ids, mask), self.mesh)
    sample = self.sampler(c.temperature)(params, ids, mask, key)
    host = jax.device_get(sample)
    texts = decode_completions(self.tok, host.tokens, host.completion_mask, d.prompt_width)
    prompts = [d.pool_prompts[a] for a in np.repeat(arms, per_prompt)]
    rewards = np.array([d.task.reward(p, t) for p, t in zip(prompts, texts)], np.float32)
    correct = np.array([d.task.is_correct(p, t) for p, t in zip(prompts, texts)])
    return sample, host, rewards, correct

  def _reinforce_ada_batch(self, params, arms: np.ndarray, key):
    """Reinforce-Ada (arXiv 2510.04996): rounds of `samples_per_round` completions per prompt
    until its exit rule holds, then a fixed-size group per prompt with the baseline of every
    sample drawn for it. Every round samples all prompts (static shapes); rows of prompts that
    already exited are ignored by the curriculum."""
    ada = self.curriculum
    n, m = ada.group_size, ada.samples_per_round
    p = len(arms)
    rounds, drawn_correct, drawn_len = [], [], []

    def draw(round_key, active):
      del active  # All rows are sampled; the round state ignores inactive ones.
      sample, host, rewards, correct = self._rollouts(params, arms, m, round_key)
      rounds.append(host)
      drawn_correct.append(correct.reshape(p, m))
      return rewards.reshape(p, m)

    groups, stats, round_state = ada.collect(key, p, draw)
    t_sampled = time.perf_counter()
    index = np.asarray(groups.sample_index)                     # [P, n] slots r * M + j
    r, j = index // m, index % m
    rows = r * p * m + np.arange(p)[:, None] * m + j            # rows of the round-major concat
    fields = ('tokens', 'prompt_mask', 'completion_mask', 'behavior_logp', 'untruncated_logp',
              'lengths', 'stopped')
    cat = {f: np.concatenate([np.asarray(getattr(h, f)) for h in rounds]) for f in fields}
    picked = {f: v[rows.reshape(-1)] for f, v in cat.items()}
    kept_rewards = np.asarray(groups.rewards, np.float32).reshape(-1)
    batch = Rollout(
        **picked, rewards=jnp.asarray(kept_rewards),
        advantages=jnp.asarray(np.asarray(groups.advantages, np.float32).reshape(-1)),
        group_ids=jnp.arange(p * n, dtype=jnp.int32) // n)
    correct = np.concatenate(drawn_correct, axis=1)[np.arange(p)[:, None], index].reshape(-1)
    metrics = {f'ada/{k}': float(v) for k, v in stats.items()}
    all_correct = np.concatenate(drawn_correct, axis=1)
    drawn = np.asarray(round_state.drawn)[:, :all_correct.shape[1]]
    metrics['ada/drawn_pass_rate'] = float((all_correct & drawn).sum() / max(drawn.sum(), 1))
    host = jax.tree.map(np.asarray, batch)
    return batch, host, kept_rewards, correct, metrics, t_sampled

  def _enter_rl(self, params) -> dict[str, Any]:
    ref = jax.device_put(jax.tree.map(jnp.copy, params), self.param_shardings)
    return {'train': ts_lib.init_train_state(params, self.rl_tx, self.mesh), 'ref_params': ref,
            'curriculum': self.curriculum.init(), 'rng': _key_data(self.base_key)}

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
                   + _fmt_eval(before))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_time = usage.ru_utime + usage.ru_stime
    lines.append(f'wall time {wall_time:.1f} s (this process: {cpu_time:.0f} s of CPU time)')
    return {'evals': evals, 'before': before, 'after': after, 'wall_time': wall_time,
            'process_cpu_time': cpu_time, 'text': '\n'.join(lines)}


def _fmt_eval(e: dict[str, float]) -> str:
  return ', '.join(f'{k.split("/")[-1]}={v:.4f}' for k, v in e.items() if k != 'eval/time')


def train_and_evaluate(config: Config, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) the experiment `config` in `workdir`; returns the summary dict.

  The summary holds the held-out evaluations `before` (after the warm start) and `after` (after
  RL), every intermediate evaluation, the wall time, and a printable `text`.
  """
  return Harness(config, workdir).run()
