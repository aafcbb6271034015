"""Experiment configuration: one frozen dataclass, every field a command-line flag.

`Config` is what `experiments.train.train_and_evaluate(config, workdir)` takes, from a notebook
(`Config(estimator='gspo', rl_steps=50)`) or from `experiments.launch` (flags of the same names,
usually from a `--flagfile`). `Config.validate()` checks every field and the relations between
them and raises `ValueError` naming the flag (`--num_minibatches`) and the valid values, so a bad
value fails at start-up, before any compilation.

Fields whose default is None ("preset") take the estimator's paper/library default
(`rljax.train.estimators.ESTIMATORS`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Optional

from absl import flags

from rljax.train import estimators as est_lib

TOKENIZERS = ('char', 'bpe', 'unigram')
MODELS = ('tiny', 'small', 'micro')
SCHEDULES = ('constant', 'cosine', 'linear')
OPTIMIZERS = ('adamw', 'adam', 'sgd')
AGGREGATIONS = ('token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum',
                'seq-mean-token-sum-norm')
KL_ESTIMATORS = ('k1', 'k2', 'k3', 'abs', 'mse')
IS_LEVELS = ('token', 'sequence')


def _f(default, help_text, *, choices=None, lo=None, hi=None, lo_open=False):
  return dataclasses.field(default=default, metadata=dict(
      help=help_text, choices=choices, lo=lo, hi=hi, lo_open=lo_open))


def _task_names():
  from rljax.data import tasks  # pylint: disable=g-import-not-at-top
  return tuple(tasks.task_names())


def _curricula():
  from rljax.data import curricula  # pylint: disable=g-import-not-at-top
  return tuple(curricula.SAMPLER_NAMES)


@dataclasses.dataclass(frozen=True)
class Config:
  """Every knob of an experiment (see the `help` of each field, or `--helpfull`)."""

  # --- run
  seed: int = _f(0, 'Seed of everything (model init, data order, sampling).', lo=0)

  # --- task and data
  task: str = _f('arithmetic', 'Task name (rljax.data.tasks).', choices=_task_names)
  task_args: str = _f('{}', 'JSON dict of keyword arguments of the task constructor, '
                      'e.g. {"levels": [1, 2, 3], "ops": ["+"]}.')
  sft_levels: str = _f('', 'Task levels of the warm-start demonstrations, comma-separated, '
                       'each optionally with a count ("1,2" splits --sft_num_demos evenly; '
                       '"2:2000,3:100" gives 2000 of level 2 and 100 of level 3); empty: all.')
  sft_num_demos: int = _f(20000, 'Distinct demonstrations in the warm-start set.', lo=1)
  demo_error_rate: float = _f(0.0, 'Fraction of warm-start demonstrations whose answer is '
                              'replaced by the answer of another problem (an imperfect teacher; '
                              'chosen by the seed).', lo=0.0, hi=1.0)
  rl_levels: str = _f('', 'Task levels of the RL prompt pool, as --sft_levels (empty: all).')
  rl_pool_size: int = _f(20000, 'Training prompts in the RL pool (the curriculum arms).', lo=1)
  rl_pool_disjoint: bool = _f(True, 'Keep the warm-start demonstrations\' prompts out of the RL '
                              'pool (RL then trains on problems without demonstrations).')
  eval_levels: str = _f('', 'Task levels of the held-out set, as --sft_levels (empty: all).')
  eval_num: int = _f(256, 'Held-out prompts per evaluation.', lo=1)

  # --- tokenizer and model
  tokenizer: str = _f('char', 'Tokenizer trained on the task text (char, bpe, unigram), or a '
                      'path to a sentencepiece .model file.')
  vocab_size: int = _f(64, 'Vocabulary size of a trained bpe/unigram tokenizer.', lo=8)
  model: str = _f('micro', 'Model preset: micro (2 layers, d 128), small (4 layers, d 192), '
                  'tiny (TransformerConfig.tiny: 4 layers, d 256).', choices=MODELS)
  d_model: int = _f(0, 'Override of the preset width (0: preset).', lo=0)
  num_layers: int = _f(0, 'Override of the preset depth (0: preset).', lo=0)
  num_heads: int = _f(0, 'Override of the preset number of heads (0: preset).', lo=0)
  ffn_dim: int = _f(0, 'Override of the preset MLP width (0: preset).', lo=0)
  init_from_hf: str = _f('', 'Directory of a Hugging Face checkpoint (config.json + safetensors) '
                         'to start from instead of a fresh model.')
  hf_tokenizer: bool = _f(False, 'With --init_from_hf: use the checkpoint\'s tokenizer.json.')
  init_from_workdir: str = _f('', 'Workdir of an earlier run (same task and model flags) whose '
                              'final parameters and tokenizer this run starts from; with '
                              '--sft_steps=0 this is RL from that run\'s warm start.')

  # --- supervised warm start
  sft_steps: int = _f(300, 'Supervised warm-start steps (0: none).', lo=0)
  sft_batch_size: int = _f(64, 'Warm-start batch size (sequences).', lo=1)
  sft_learning_rate: float = _f(1e-3, 'Warm-start peak learning rate.', lo=0.0, lo_open=True)
  sft_warmup_steps: int = _f(20, 'Warm-start linear warmup steps.', lo=0)
  sft_schedule: str = _f('constant', 'Warm-start schedule after warmup.', choices=SCHEDULES)
  sft_eval_every: int = _f(0, 'Evaluate every N warm-start steps (0: only at the end).', lo=0)

  # --- RL rollouts
  rl_steps: int = _f(100, 'RL steps (each: sample a batch, several optimizer steps).', lo=0)
  num_prompts: int = _f(32, 'Prompts per RL batch.', lo=1)
  group_size: int = _f(8, 'Completions per prompt (G).', lo=1)
  max_new_tokens: int = _f(8, 'Completion width N (longer completions are truncated).', lo=1)
  temperature: float = _f(1.0, 'Sampling temperature of the rollouts.', lo=0.0, lo_open=True)
  top_k: int = _f(0, 'Top-k truncation of rollouts (0: off).', lo=0)
  top_p: float = _f(1.0, 'Top-p (nucleus) truncation of rollouts (1: off).', lo=0.0, hi=1.0,
                    lo_open=True)
  min_p: float = _f(0.0, 'Min-p truncation of rollouts (0: off).', lo=0.0, hi=1.0)
  curriculum: str = _f('uniform', 'Prompt sampler over the RL pool (rljax.data.curricula).',
                       choices=_curricula)
  curriculum_args: str = _f('{}', 'JSON dict of curriculum hyperparameters.')

  # --- RL update
  estimator: str = _f('grpo', 'Policy-gradient estimator.',
                      choices=lambda: tuple(est_lib.ESTIMATORS))
  advantage: str = _f('', 'Advantage mode (empty: the estimator preset).',
                      choices=lambda: ('',) + est_lib.ADVANTAGE_MODES)
  aggregation: str = _f('', 'Loss aggregation (empty: the estimator preset).',
                        choices=('',) + AGGREGATIONS)
  max_tokens: int = _f(0, 'Constant of seq-mean-token-sum-norm (0: max_new_tokens).', lo=0)
  num_epochs: int = _f(2, 'Passes over each RL batch.', lo=1)
  num_minibatches: int = _f(2, 'Optimizer steps per pass (mini-batches of whole groups).', lo=1)
  epsilon_low: Optional[float] = _f(None, 'Lower clip range (preset if unset).', lo=0.0)
  epsilon_high: Optional[float] = _f(None, 'Upper clip range (preset if unset).', lo=0.0)
  dual_clip: Optional[float] = _f(None, 'Dual-clip constant c > 1 (unset: off).', lo=1.0,
                                  lo_open=True)
  clamp: float = _f(20.0, 'Clamp of log-ratios before exp.', lo=0.0, lo_open=True)
  kl_coef: float = _f(0.0, 'KL-to-reference penalty weight.', lo=0.0)
  kl_estimator: str = _f('k3', 'KL estimator of the penalty.', choices=KL_ESTIMATORS)
  entropy_coef: float = _f(0.0, 'Entropy bonus weight.', lo=0.0)
  is_correction: str = _f('none', 'Rollout-vs-trainer importance correction.',
                          choices=est_lib.IS_CORRECTIONS)
  is_cap: float = _f(2.0, 'Cap of the TIS/MIS weights.', lo=1.0)
  is_level: str = _f('token', 'Level of the TIS/MIS weights.', choices=IS_LEVELS)
  old_logp: str = _f('trainer', 'Proximal anchor: recomputed by the trainer or the sampler\'s.',
                     choices=est_lib.OLD_LOGP_SOURCES)
  topr_baseline: Optional[float] = _f(None, 'TOPR reward baseline (preset if unset).')
  copg_beta: Optional[float] = _f(None, 'CoPG beta (preset if unset).', lo=0.0, lo_open=True)
  opmd_tau: Optional[float] = _f(None, 'OPMD tau, weight of the squared log-ratio (preset if '
                                 'unset).', lo=0.0, lo_open=True)
  asymre_shift: Optional[float] = _f(None, 'AsymRE baseline shift delta (preset if unset).')
  rec_variant: str = _f('', 'REC mask variant (empty: preset).',
                        choices=lambda: ('',) + tuple(__import__('rljax').REC_VARIANTS))
  clip_cov_ratio: Optional[float] = _f(None, 'Clip-Cov fraction of tokens detached.', lo=0.0,
                                       hi=1.0)
  clip_cov_lower: Optional[float] = _f(None, 'Clip-Cov covariance lower bound.')
  clip_cov_upper: Optional[float] = _f(None, 'Clip-Cov covariance upper bound.')
  kl_cov_ratio: Optional[float] = _f(None, 'KL-Cov fraction of tokens penalised.', lo=0.0,
                                     hi=1.0)
  kl_cov_coef: Optional[float] = _f(None, 'KL-Cov penalty coefficient.', lo=0.0)

  # --- RL optimizer
  optimizer: str = _f('adamw', 'Optimizer.', choices=OPTIMIZERS)
  learning_rate: float = _f(1e-4, 'RL peak learning rate.', lo=0.0, lo_open=True)
  lr_schedule: str = _f('constant', 'RL schedule after warmup.', choices=SCHEDULES)
  warmup_steps: int = _f(0, 'RL linear warmup (optimizer updates).', lo=0)
  weight_decay: float = _f(0.0, 'Decoupled weight decay (adamw).', lo=0.0)
  max_grad_norm: float = _f(1.0, 'Global gradient-norm clip (0: off).', lo=0.0)
  adam_b1: float = _f(0.9, 'Adam beta1.', lo=0.0, hi=1.0)
  adam_b2: float = _f(0.999, 'Adam beta2.', lo=0.0, hi=1.0)

  # --- evaluation
  eval_every: int = _f(25, 'Evaluate every N RL steps (0: only before and after RL).', lo=0)
  eval_samples: int = _f(8, 'Samples per held-out prompt for sampled pass@k.', lo=1)
  eval_temperature: Optional[float] = _f(None, 'Temperature of sampled eval (unset: '
                                         '--temperature).', lo=0.0, lo_open=True)

  # --- checkpoints, mesh, logging
  checkpoint_every: int = _f(50, 'Save a checkpoint every N steps (0: only at the end).', lo=0)
  keep_checkpoints: int = _f(2, 'Checkpoints kept on disk.', lo=1)
  mesh_data: int = _f(1, 'Devices on the data axis of the mesh.', lo=1)
  mesh_fsdp: int = _f(1, 'Devices on the fsdp axis.', lo=1)
  mesh_tensor: int = _f(1, 'Devices on the tensor axis.', lo=1)
  log_every: int = _f(1, 'Write metrics every N steps.', lo=1)
  tensorboard: bool = _f(True, 'Write TensorBoard event files.')
  console: bool = _f(True, 'Print a progress line per logged step.')

  # ------------------------------------------------------------------ derived values

  def replace(self, **changes) -> 'Config':
    return dataclasses.replace(self, **changes)

  def _level_items(self, which: str) -> list[list[str]]:
    text = getattr(self, f'{which}_levels')
    return [item.split(':') for item in text.split(',') if item.strip()]

  def levels(self, which: str) -> Optional[tuple[int, ...]]:
    """The levels of `--{which}_levels` ('1,2' or '1:500,2:100'), or None for all."""
    items = self._level_items(which)
    return tuple(int(item[0]) for item in items) if items else None

  def level_counts(self, which: str) -> Optional[tuple[int, ...]]:
    """Per-level example counts when given as 'level:count', else None (an even split)."""
    items = self._level_items(which)
    if not items or any(len(item) == 1 for item in items):
      return None
    return tuple(int(item[1]) for item in items)

  @property
  def task_kwargs(self) -> dict[str, Any]:
    return json.loads(self.task_args)

  @property
  def curriculum_kwargs(self) -> dict[str, Any]:
    return json.loads(self.curriculum_args)

  @property
  def batch_size(self) -> int:
    return self.num_prompts * self.group_size

  def loss_kwargs(self) -> tuple[tuple[str, Any], ...]:
    """Estimator hyperparameters set by flag, as the loss functions' keyword names."""
    mapping = {
        'epsilon_low': 'epsilon_low', 'epsilon_high': 'epsilon_high',
        'dual_clip': 'dual_clip', 'topr_baseline': 'baseline', 'copg_beta': 'beta',
        'opmd_tau': 'tau', 'asymre_shift': 'shift', 'rec_variant': 'variant',
        'clip_cov_ratio': 'clip_ratio', 'clip_cov_lower': 'cov_lower',
        'clip_cov_upper': 'cov_upper', 'kl_cov_ratio': 'kl_cov_ratio',
        'kl_cov_coef': 'kl_coef',
    }
    # Only the estimator's own hyperparameters (asymre_beta must not set CoPG's beta).
    own = {
        'topr': {'topr_baseline'}, 'copg': {'copg_beta'}, 'opmd': {'opmd_tau'},
        'asymre': {'asymre_shift'}, 'rec': {'rec_variant', 'epsilon_low', 'epsilon_high'},
        'clip_cov': {'clip_cov_ratio', 'clip_cov_lower', 'clip_cov_upper'},
        'kl_cov': {'kl_cov_ratio', 'kl_cov_coef'},
    }
    clip_fields = {'epsilon_low', 'epsilon_high', 'dual_clip'}
    allowed = own.get(self.estimator, set()) | clip_fields
    out = []
    for field_name, kw in mapping.items():
      if field_name not in allowed:
        continue
      value = getattr(self, field_name)
      if value is None or value == '':
        continue
      out.append((kw, value))
    out.append(('clamp', self.clamp))
    return tuple(out)

  # ------------------------------------------------------------------ validation

  def validate(self) -> 'Config':
    """Checks every field; raises ValueError naming the flag and the valid values."""
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      md = f.metadata
      choices = md.get('choices')
      if callable(choices):
        choices = choices()
      if choices is not None and value not in choices:
        raise ValueError(f'--{f.name}={value!r} is invalid; valid values: {list(choices)}')
      if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
          raise ValueError(f'--{f.name}={value!r} must be finite')
        lo, hi = md.get('lo'), md.get('hi')
        if lo is not None and (value < lo or (md.get('lo_open') and value == lo)):
          op = '>' if md.get('lo_open') else '>='
          raise ValueError(f'--{f.name}={value!r} is invalid; it must be {op} {lo}')
        if hi is not None and value > hi:
          raise ValueError(f'--{f.name}={value!r} is invalid; it must be <= {hi}')
    for name in ('task_args', 'curriculum_args'):
      try:
        parsed = json.loads(getattr(self, name))
      except json.JSONDecodeError as e:
        raise ValueError(f'--{name} must be a JSON object, e.g. {{"levels": [1, 2]}}: {e}')
      if not isinstance(parsed, dict):
        raise ValueError(f'--{name} must be a JSON object, got {getattr(self, name)!r}')
    for which in ('sft', 'rl', 'eval'):
      try:
        self.levels(which)
        counts = self.level_counts(which)
        bad = any(len(item) > 2 for item in self._level_items(which))
      except ValueError:
        bad = True
      if bad or (counts is not None and min(counts) < 1):
        raise ValueError(f'--{which}_levels must be comma-separated levels, each optionally '
                         f'"level:count" with count >= 1, got '
                         f'{getattr(self, which + "_levels")!r}')
    if self.tokenizer not in TOKENIZERS and not self.tokenizer.endswith('.model'):
      raise ValueError(f'--tokenizer={self.tokenizer!r} is invalid; valid values: '
                       f'{list(TOKENIZERS)} or a path to a sentencepiece .model file')
    if self.num_prompts % self.num_minibatches:
      raise ValueError(f'--num_minibatches={self.num_minibatches} must divide '
                       f'--num_prompts={self.num_prompts} (mini-batches hold whole groups)')
    batch_devices = self.mesh_data * self.mesh_fsdp
    for name, size in (('num_prompts * group_size', self.batch_size),
                       ('sft_batch_size', self.sft_batch_size),
                       ('num_prompts * group_size / num_minibatches',
                        self.batch_size // self.num_minibatches)):
      if size % batch_devices:
        raise ValueError(f'{name} = {size} must be a multiple of --mesh_data x --mesh_fsdp = '
                         f'{batch_devices}')
    if self.advantage == 'given' and self.curriculum != 'reinforce_ada':
      raise ValueError('--advantage=given (advantages computed by the curriculum) needs '
                       '--curriculum=reinforce_ada')
    spec = est_lib.get_estimator(self.estimator)
    if self.is_correction != 'none' and not spec.supports_is:
      raise ValueError(f'--is_correction={self.is_correction} does not apply to '
                       f'--estimator={self.estimator}; use it with one of '
                       f'{sorted(n for n, e in est_lib.ESTIMATORS.items() if e.supports_is)}')
    if self.estimator in ('copg',) and self.group_size < 2:
      raise ValueError(f'--estimator={self.estimator} needs --group_size >= 2')
    if self.advantage_mode() in ('group', 'group-none', 'group-batch-std', 'rloo', 'global') \
        and self.group_size < 2 and self.rl_steps > 0 and self.curriculum != 'reinforce_ada':
      raise ValueError(f'--group_size={self.group_size}: group baselines need >= 2 completions '
                       'per prompt')
    if self.rl_steps > 0:
      try:
        est_lib.check_available(self.estimator)
      except ValueError as e:
        raise ValueError(f'--estimator={self.estimator!r}: {e}') from None
    if self.init_from_hf and self.init_from_workdir:
      raise ValueError('--init_from_hf and --init_from_workdir are exclusive')
    if self.sft_steps == 0 and self.rl_steps == 0:
      raise ValueError('--sft_steps and --rl_steps are both 0: nothing to do')
    return self

  def advantage_mode(self) -> str:
    return self.advantage or est_lib.get_estimator(self.estimator).advantage


# ------------------------------------------------------------------ absl flags


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines one absl flag per `Config` field (enums for fields with choices)."""
  for f in dataclasses.fields(Config):
    if f.name in flag_values:
      continue
    md = f.metadata
    default = f.default
    choices = md.get('choices')
    if callable(choices):
      choices = choices()
    kw = dict(name=f.name, default=default, help=md['help'], flag_values=flag_values)
    if choices is not None:
      flags.DEFINE_enum(enum_values=list(choices), **kw)
    elif isinstance(default, bool):
      flags.DEFINE_bool(**kw)
    elif isinstance(default, int):
      flags.DEFINE_integer(lower_bound=md.get('lo'), upper_bound=md.get('hi'), **kw)
    elif isinstance(default, float) or (default is None and 'float' in str(f.type)):
      flags.DEFINE_float(lower_bound=None if md.get('lo_open') else md.get('lo'),
                         upper_bound=md.get('hi'), **kw)
    else:
      flags.DEFINE_string(**kw)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> Config:
  """Builds and validates a `Config` from parsed flags."""
  values = {f.name: flag_values[f.name].value for f in dataclasses.fields(Config)}
  return Config(**values).validate()


def config_to_dict(config: Config) -> dict[str, Any]:
  return dataclasses.asdict(config)
