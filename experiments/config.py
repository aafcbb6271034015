"""Experiment configuration: one frozen dataclass, every field a command-line flag.

`Config` is what `experiments.train.train_and_evaluate(config, workdir)` takes, from a notebook
(`Config(estimator='gspo', rl_steps=50)`) or from `experiments.launch` (flags of the same names,
usually from a `--flagfile`). `Config.validate()` checks every field and the relations between
them and raises `ValueError` naming the flag (`--num_minibatches`) and the valid values, so a bad
value fails at start-up, before any compilation.

The estimator hyperparameter flags (`--epsilon_high`, `--copg_beta`, ...) are not written here:
each comes from the `Flag`s of an entry of the estimator registry
(`rljax.train.estimators.ESTIMATORS`), unset by default (the estimator's paper/library preset),
and `validate` rejects one the chosen estimator does not read.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Optional

from absl import flags

import rljax
from experiments import paths
from rljax.train import estimators as est_lib
from rljax.train import train_step as ts_lib

TOKENIZERS = ('char', 'bpe', 'unigram')
# Warm-start steps of a fresh model when --sft_steps is unset (a loaded checkpoint gets none).
DEFAULT_SFT_STEPS = 300
MODELS = ('tiny', 'small', 'micro')


def _f(default, help_text, *, choices=None, lo=None, hi=None, lo_open=False):
  return dataclasses.field(default=default, metadata=dict(
      help=help_text, choices=choices, lo=lo, hi=hi, lo_open=lo_open))


def _task_names():
  from rljax.data import tasks  # pylint: disable=g-import-not-at-top
  return tuple(tasks.task_names())


def _verifier_choices():
  from rljax.data import verifiers  # pylint: disable=g-import-not-at-top
  return ('',) + verifiers.verifier_names() + ('none',)


def _curricula():
  from rljax.data import curricula  # pylint: disable=g-import-not-at-top
  return tuple(curricula.SAMPLER_NAMES)


class FlagValueError(ValueError):
  """A flag value that only turns out invalid once the run builds its data or model.

  The launchers print it as one line naming the flag, like an error of `Config.validate`.
  """


@dataclasses.dataclass(frozen=True)
class _ConfigBase:
  """The fields of `Config` that no estimator declares."""

  # --- run
  seed: int = _f(0, 'Seed of everything (model init, data order, sampling).', lo=0)
  override: bool = _f(False, 'Continue a workdir whose config.json differs from this run in '
                      'flags that change the run (without it such a workdir is refused, the '
                      'message listing the differing flags).')

  # --- task and data
  task: str = _f('arithmetic', 'Task name (rljax.data.tasks).', choices=_task_names)
  task_args: str = _f('{}', 'JSON dict of keyword arguments of the task constructor, '
                      'e.g. {"levels": [1, 2, 3], "ops": ["+"]}.')
  prompt_file: str = _f('', 'A file of prompts as the task (replaces --task): .jsonl, .json, '
                        '.parquet, a directory saved by Hugging Face datasets (save_to_disk), or '
                        'a directory of train*/test* files. Further options of '
                        'rljax.data.tasks.PromptFile (test_path, split_field, test_fraction, '
                        'template, demonstration_field, verifier_args) go in --task_args.')
  prompt_field: str = _f('prompt', 'With --prompt_file: the field holding the prompt.')
  answer_field: str = _f('answer', 'With --prompt_file: the field holding the reference answer '
                         '(also the warm-start demonstration unless --task_args sets '
                         'demonstration_field); empty: none (needs --verifier=none).')
  verifier: str = _f('', 'With --prompt_file: how completions are graded (empty: exact); exact, '
                     'numeric, gsm8k, boxed (rljax.data.verifiers), or none (needs --reward; '
                     '"correct" then means reward > 0).', choices=_verifier_choices)
  reward: str = _f('', 'Your own reward, module:function or path/to/file.py:function, called '
                   'as fn(prompts, completions, answers) -> one float per completion (see '
                   'rljax.data.rewards); it replaces the task\'s reward, the task\'s verifier '
                   'still decides pass rate and accuracy.')
  sft_levels: str = _f('', 'Task levels of the warm-start demonstrations, comma-separated, '
                       'each optionally with a count ("1,2" splits --sft_num_demos evenly; '
                       '"2:2000,3:100" gives 2000 of level 2 and 100 of level 3); empty: all.')
  sft_num_demos: Optional[int] = _f(None, 'Distinct demonstrations in the warm-start set '
                                    '(unset: 20000, or the whole train split of a task read '
                                    'from a file if it holds fewer).', lo=1)
  demo_error_rate: float = _f(0.0, 'Fraction of warm-start demonstrations the teacher gets '
                              'wrong, the kind of error set by --demo_error (chosen by the '
                              'seed).', lo=0.0, hi=1.0)
  demo_error: str = _f('random', 'Kind of teacher error: random (another problem\'s answer) or '
                       'systematic (the task\'s rule-like mistake, e.g. arithmetic\'s dropped '
                       'final carry; --demo_error_rate is then the fraction of the problems it '
                       'applies to).', choices=('random', 'systematic'))
  rl_levels: str = _f('', 'Task levels of the RL prompt pool, as --sft_levels (empty: all).')
  rl_pool_size: Optional[int] = _f(None, 'Training prompts in the RL pool (the curriculum '
                                   'arms; unset: 20000, or the whole train split of a task '
                                   'read from a file if it holds fewer).', lo=1)
  rl_pool_disjoint: bool = _f(True, 'Keep the warm-start demonstrations\' prompts out of the RL '
                              'pool (RL then trains on problems without demonstrations).')
  eval_levels: str = _f('', 'Task levels of the held-out set, as --sft_levels (empty: all).')
  eval_num: Optional[int] = _f(None, 'Held-out prompts per evaluation (unset: 256, or the '
                               'whole test split of a task read from a file if it holds '
                               'fewer).', lo=1)

  # --- tokenizer and model
  tokenizer: str = _f('', 'Tokenizer: one trained on the task text (char, bpe, unigram), or a '
                      'path to a Hugging Face tokenizer.json or a sentencepiece .model file '
                      '(unset: the checkpoint\'s tokenizer with --init_from_hf, else char).')
  vocab_size: int = _f(64, 'Vocabulary size of a trained bpe/unigram tokenizer.', lo=8)
  model: str = _f('micro', 'Model preset: micro (2 layers, d 128), small (4 layers, d 192), '
                  'tiny (TransformerConfig.tiny: 4 layers, d 256).', choices=MODELS)
  d_model: int = _f(0, 'Override of the preset width (0: preset).', lo=0)
  num_layers: int = _f(0, 'Override of the preset depth (0: preset).', lo=0)
  num_heads: int = _f(0, 'Override of the preset number of heads (0: preset).', lo=0)
  ffn_dim: int = _f(0, 'Override of the preset MLP width (0: preset).', lo=0)
  init_from_hf: str = _f('', 'Directory of a Hugging Face checkpoint (config.json + safetensors) '
                         'to start from instead of a fresh model.')
  hf_tokenizer: bool = _f(False, 'Deprecated, no effect: with --init_from_hf the checkpoint\'s '
                          'tokenizer is the default (accepted so that old flagfiles still run).')
  chat_template: bool = _f(True, 'Render each prompt as a user turn through the chat template of '
                           'a Hugging Face tokenizer (the checkpoint\'s with --init_from_hf) '
                           'when it has one (false: feed the raw text).')
  init_from_workdir: str = _f('', 'Workdir of an earlier run (same task and model flags) whose '
                              'final parameters and tokenizer this run starts from; with '
                              '--sft_steps=0 this is RL from that run\'s warm start.')

  # --- LoRA
  lora_rank: int = _f(0, 'Rank of low-rank adapters on the --lora_targets projections; only '
                      'the adapters are trained and checkpointed, the base weights stay '
                      'frozen (0: full fine-tuning).', lo=0)
  lora_alpha: float = _f(8.0, 'LoRA scale numerator: the update is (alpha / rank) B A.',
                         lo=0.0, lo_open=True)
  lora_targets: str = _f('q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj',
                         'Projections that get adapters: comma-separated module names, or a '
                         'regular expression matching whole module paths such as '
                         '"layers/0/self_attn/q_proj".')

  # --- supervised warm start
  sft_steps: Optional[int] = _f(None, 'Supervised warm-start steps (0: none; unset: '
                                f'{DEFAULT_SFT_STEPS} for a fresh model, 0 with --init_from_hf).',
                                lo=0)
  sft_batch_size: int = _f(64, 'Warm-start batch size (sequences).', lo=1)
  sft_learning_rate: float = _f(1e-3, 'Warm-start peak learning rate.', lo=0.0, lo_open=True)
  sft_warmup_steps: int = _f(20, 'Warm-start linear warmup steps.', lo=0)
  sft_schedule: str = _f('constant', 'Warm-start schedule after warmup.', choices=ts_lib.SCHEDULES)
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
  rollout_staleness: int = _f(0, 'Sample each RL batch with the policy as it was this many RL '
                              'steps (policy versions; each is num_epochs x num_minibatches '
                              'optimizer updates) earlier, recording that sampler\'s behaviour '
                              'log-probs, as an asynchronous trainer sees its data (0: '
                              'on-policy).', lo=0)

  # --- RL update
  estimator: str = _f('grpo', 'Policy-gradient estimator.',
                      choices=lambda: tuple(est_lib.ESTIMATORS))
  advantage: str = _f('', 'Advantage mode (empty: the estimator preset).',
                      choices=lambda: ('',) + est_lib.ADVANTAGE_MODES)
  aggregation: str = _f('', 'Loss aggregation (empty: the estimator preset).',
                        choices=('',) + rljax.AGGREGATION_MODES)
  max_tokens: int = _f(0, 'Constant of seq-mean-token-sum-norm (0: max_new_tokens).', lo=0)
  num_epochs: int = _f(2, 'Passes over each RL batch.', lo=1)
  num_minibatches: int = _f(2, 'Optimizer steps per pass (mini-batches of whole groups).', lo=1)
  clamp: float = _f(20.0, 'Clamp of log-ratios before exp.', lo=0.0, lo_open=True)
  kl_coef: float = _f(0.0, 'KL-to-reference penalty weight.', lo=0.0)
  track_ref_kl: bool = _f(False, 'Score the reference policy on every update to report kl_ref '
                          'even without a KL term (one more forward pass per update).')
  kl_estimator: str = _f('k3', 'KL estimator of the penalty.', choices=rljax.KL_ESTIMATORS)
  entropy_coef: float = _f(0.0, 'Entropy bonus weight.', lo=0.0)
  is_correction: str = _f('none', 'Rollout-vs-trainer importance correction.',
                          choices=est_lib.IS_CORRECTIONS)
  is_cap: float = _f(2.0, 'Cap of the TIS/MIS weights.', lo=1.0)
  is_level: str = _f('token', 'Level of the TIS/MIS weights.', choices=rljax.IS_LEVELS)
  old_logp: str = _f('trainer', 'Proximal anchor: recomputed by the trainer or the sampler\'s.',
                     choices=est_lib.OLD_LOGP_SOURCES)

  # --- RL optimizer
  optimizer: str = _f('adamw', 'Optimizer.', choices=ts_lib.OPTIMIZERS)
  learning_rate: float = _f(1e-4, 'RL peak learning rate.', lo=0.0, lo_open=True)
  lr_schedule: str = _f('constant', 'RL schedule after warmup.', choices=ts_lib.SCHEDULES)
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
  cpu_devices: int = _f(0, 'XLA:CPU devices the host is split into before JAX starts, for '
                        '--mesh_data to spread the rows over (0: JAX\'s default, one unless '
                        'XLA_FLAGS sets more; no effect on GPU and TPU).', lo=0)
  param_dtype: str = _f('float32', 'Dtype the policy\'s parameters (and so its gradients and '
                        'optimizer state) are stored in; float32 is the only one the RL and '
                        'warm-start optimizers accept (bfloat16 would keep the optimizer state '
                        'in bfloat16: use --compute_dtype=bfloat16 instead).',
                        choices=('float32', 'bfloat16'))
  compute_dtype: str = _f('float32', 'Dtype of activations and matmuls (log-probs are float32 '
                          'whatever it is); bfloat16 with --param_dtype=float32 is mixed '
                          'precision with float32 master parameters.',
                          choices=('float32', 'bfloat16'))
  remat: str = _f('none', 'Rematerialisation of the decoder layers in the backward pass: none, '
                  'block (keep the weight matmuls\' outputs, recompute the rest of each layer) '
                  'or full (keep only each layer\'s input).', choices=('none', 'block', 'full'))
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

  # ------------------------------------------------------------------ validation

  def validate(self) -> 'Config':
    """Checks every field and path; returns the config with its unset defaults filled in.

    Unset `--sft_steps` becomes 0 with `--init_from_hf`, else `DEFAULT_SFT_STEPS`; unset
    `--tokenizer` becomes 'char' without `--init_from_hf` (with it, the checkpoint's tokenizer).
    Raises ValueError naming the flag and the valid values.
    """
    for f in dataclasses.fields(self):
      _check_field(f, getattr(self, f.name))
    if self.init_from_hf and self.init_from_workdir:
      raise ValueError('--init_from_hf and --init_from_workdir are exclusive')
    self = self._resolved()  # pylint: disable=self-cls-assignment
    self._check_text_fields()
    self._check_prompt_file()
    self._check_batch_layout()
    self._check_estimator()
    paths.check_paths(self)
    self._check_lora()
    if self.sft_steps == 0 and self.rl_steps == 0:
      raise ValueError('--sft_steps and --rl_steps are both 0: nothing to do')
    if self.param_dtype != 'float32':
      raise ValueError(f'--param_dtype={self.param_dtype} would keep the gradients and optimizer '
                       'state in that dtype; use --param_dtype=float32 --compute_dtype='
                       f'{self.param_dtype} (float32 master parameters, {self.param_dtype} '
                       'matmuls)')
    if self.demo_error != 'random' and self.demo_error_rate == 0:
      raise ValueError(f'--demo_error={self.demo_error} does nothing with --demo_error_rate=0; '
                       'set the fraction of demonstrations the teacher gets wrong')
    return self

  def _check_lora(self) -> None:
    from rljax.models import lora  # pylint: disable=g-import-not-at-top
    try:
      lora.target_matcher(self.lora_targets)
    except ValueError as e:
      raise ValueError(f'--lora_targets={self.lora_targets!r} is invalid: {e}') from None

  def _check_text_fields(self) -> None:
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
    if self.tokenizer and self.tokenizer not in TOKENIZERS and \
        not self.tokenizer.endswith(('.model', '.json')):
      raise ValueError(f'--tokenizer={self.tokenizer!r} is invalid; valid values: '
                       f'{list(TOKENIZERS)} (trained on the task text), a path to a Hugging '
                       'Face tokenizer.json, a path to a sentencepiece .model file, or unset '
                       '(with --init_from_hf: the checkpoint\'s tokenizer)')
    if self.init_from_hf and self.tokenizer in TOKENIZERS:
      raise ValueError(f'--tokenizer={self.tokenizer} trains a tokenizer on the task text, '
                       f'whose ids mean nothing to the embeddings of --init_from_hf='
                       f'{self.init_from_hf!r}; leave --tokenizer unset (the checkpoint\'s '
                       'tokenizer) or pass the path of its tokenizer.json')
    if self.hf_tokenizer and not self.init_from_hf:
      raise ValueError('--hf_tokenizer (deprecated) needs --init_from_hf, whose tokenizer is now '
                       'the default; drop --hf_tokenizer')

  def _resolved(self) -> 'Config':
    """The unset defaults that depend on other flags, filled in."""
    changes = {}
    if self.sft_steps is None:
      changes['sft_steps'] = 0 if self.init_from_hf else DEFAULT_SFT_STEPS
    if not self.tokenizer and not self.init_from_hf:
      changes['tokenizer'] = 'char'
    return self.replace(**changes) if changes else self

  def _check_prompt_file(self) -> None:
    """--prompt_file and its fields, --verifier, --reward (which is imported here, at start-up)."""
    from rljax.data import rewards  # pylint: disable=g-import-not-at-top
    if self.prompt_file:
      if not os.path.exists(self.prompt_file):
        raise ValueError(f'--prompt_file={self.prompt_file} does not exist')
      if self.task not in ('arithmetic', 'prompt_file'):
        raise ValueError(f'--prompt_file replaces --task; got --task={self.task}')
      taken = sorted({'path', 'prompt_field', 'answer_field', 'verifier'} & set(self.task_kwargs))
      if taken:
        raise ValueError(f'--task_args sets {taken}, which --prompt_file and its flags set')
      if not self.answer_field and self.verifier != 'none':
        raise ValueError('--answer_field is empty: a file without answers needs --verifier=none '
                         '(and --reward)')
      if not self.answer_field and self.sft_steps and \
          not self.task_kwargs.get('demonstration_field'):
        raise ValueError(f'--sft_steps={self.sft_steps} needs demonstrations and --answer_field '
                         'is empty: pass --sft_steps=0 or a demonstration_field in --task_args')
    else:
      for name in ('prompt_field', 'answer_field', 'verifier'):
        if getattr(self, name) != _ConfigBase.__dataclass_fields__[name].default:
          raise ValueError(f'--{name} applies to --prompt_file, which is not set')
    if self.verifier == 'none' and not self.reward:
      raise ValueError('--verifier=none needs --reward (something must give the rewards)')
    if self.reward:
      try:
        rewards.load_reward(self.reward)
      except rewards.RewardError as e:
        raise ValueError(f'--reward={self.reward}: {e}') from None

  def _check_batch_layout(self) -> None:
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

  def _check_estimator(self) -> None:
    """The estimator's flags, constraints and advantage source."""
    from rljax.data import curricula  # pylint: disable=g-import-not-at-top
    spec = self.estimator_spec
    read = {f.name for f in spec.flags}
    for name, flag in est_lib.estimator_flags().items():
      if name not in read and getattr(self, name) not in (None, ''):
        readers = sorted(n for n, e in est_lib.ESTIMATORS.items() if flag in e.flags)
        raise ValueError(f'--{name} does not apply to --estimator={self.estimator} (it reads '
                         f'{sorted(read) or "no estimator flags"}); --{name} is read by {readers}')
    if self.advantage == 'given' and not curricula.provides_advantages(self.curriculum):
      givers = [n for n in curricula.CURRICULA if curricula.provides_advantages(n)]
      raise ValueError(f'--advantage=given (advantages computed by the curriculum) needs '
                       f'--curriculum in {givers}, got {self.curriculum!r}')
    if self.is_correction != 'none' and not spec.supports_is:
      raise ValueError(f'--is_correction={self.is_correction} does not apply to '
                       f'--estimator={self.estimator}; use it with one of '
                       f'{sorted(n for n, e in est_lib.ESTIMATORS.items() if e.supports_is)}')
    if self.rl_steps and self.group_size < spec.min_group_size:
      raise ValueError(f'--estimator={self.estimator} needs --group_size >= '
                       f'{spec.min_group_size}, got {self.group_size}')
    if self.rl_steps and self.group_size < 2 and \
        self.advantage_mode() in est_lib.GROUP_BASELINE_MODES:
      raise ValueError(f'--group_size={self.group_size}: the advantage mode '
                       f'{self.advantage_mode()!r} needs >= 2 completions per prompt')

  # ------------------------------------------------------------------ what the run builds

  @property
  def estimator_spec(self) -> est_lib.EstimatorSpec:
    return est_lib.get_estimator(self.estimator)

  def advantage_mode(self) -> str:
    """--advantage, else 'given' where the curriculum computes advantages, else the preset."""
    from rljax.data import curricula  # pylint: disable=g-import-not-at-top
    if self.advantage:
      return self.advantage
    if curricula.provides_advantages(self.curriculum):
      return 'given'
    return self.estimator_spec.advantage

  def loss_kwargs(self) -> tuple[tuple[str, Any], ...]:
    """The estimator's flags that are set, as (loss keyword, value) pairs."""
    return tuple((f.keyword, getattr(self, f.name)) for f in self.estimator_spec.flags
                 if getattr(self, f.name) not in (None, ''))

  def loss_config(self) -> ts_lib.LossConfig:
    """What the RL update optimises (`rljax.train.LossConfig`)."""
    return ts_lib.LossConfig(
        estimator=self.estimator, advantage=self.advantage_mode(),
        aggregation=self.aggregation or None, max_tokens=self.max_tokens or None,
        temperature=self.temperature, kl_coef=self.kl_coef, clamp=self.clamp,
        kl_estimator=self.kl_estimator, entropy_coef=self.entropy_coef,
        is_correction=self.is_correction, is_cap=self.is_cap, is_level=self.is_level,
        old_logp=self.old_logp, loss_kwargs=self.loss_kwargs(),
        track_ref_kl=self.track_ref_kl)

  def optimizer_config(self, phase: str) -> ts_lib.OptimizerConfig:
    """The optimizer of the 'sft' (warm start) or 'rl' phase."""
    if phase == 'sft':
      lr, schedule, warmup = self.sft_learning_rate, self.sft_schedule, self.sft_warmup_steps
      updates = self.sft_steps
    elif phase == 'rl':
      lr, schedule, warmup = self.learning_rate, self.lr_schedule, self.warmup_steps
      updates = self.rl_steps * self.num_epochs * self.num_minibatches
    else:
      raise ValueError(f"phase must be 'sft' or 'rl', got {phase!r}")
    return ts_lib.OptimizerConfig(
        optimizer=self.optimizer, learning_rate=lr, schedule=schedule, warmup_steps=warmup,
        decay_steps=max(updates - warmup, 0), weight_decay=self.weight_decay, b1=self.adam_b1,
        b2=self.adam_b2, max_grad_norm=self.max_grad_norm or None)


def _check_field(f: dataclasses.Field, value: Any) -> None:
  """The choices and bounds in the field's metadata."""
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


def _estimator_field(flag: est_lib.Flag):
  """A `Config` field for an estimator flag: unset by default (the preset applies)."""
  if flag.kind is str:
    return flag.name, str, _f('', flag.help, choices=('',) + tuple(flag.choices or ()))
  return flag.name, Optional[float], _f(None, flag.help, lo=flag.lo, hi=flag.hi,
                                        lo_open=flag.lo_open)


Config = dataclasses.make_dataclass(
    'Config', [_estimator_field(f) for f in est_lib.estimator_flags().values()],
    bases=(_ConfigBase,), frozen=True, namespace={'__module__': __name__})
Config.__doc__ = """Every knob of an experiment (see the `help` of each field, or `--helpfull`).

The fields of `_ConfigBase`, plus one per flag of the estimator registry
(`rljax.train.estimators.estimator_flags()`).
"""


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
    elif default is None and 'int' in str(f.type):
      flags.DEFINE_integer(lower_bound=md.get('lo'), upper_bound=md.get('hi'), **kw)
    else:
      flags.DEFINE_string(**kw)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> Config:
  """Builds and validates a `Config` from parsed flags (unset defaults filled in)."""
  values = {f.name: flag_values[f.name].value for f in dataclasses.fields(Config)}
  return Config(**values).validate()
