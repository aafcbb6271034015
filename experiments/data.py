"""The data of a run: the task's examples for each phase, the tokenizer, and their encodings.

`build_data(config, workdir)` draws the warm-start demonstrations, the RL prompt pool and the
held-out prompts, builds the tokenizer and encodes all three through the tokenizer's batch
methods (`encode_batch`, `encode_sequences`) at one shared prompt width. With a Hugging Face
tokenizer that has a chat template (and `--chat_template`, the default), each prompt is encoded
as the template renders it as one user turn followed by the generation prompt.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Sequence

import numpy as np

from experiments.config import Config
from experiments.config import FlagValueError


@dataclasses.dataclass
class Data:
  """Encoded examples of every phase (prompts left padded to `prompt_width`).

  `pool_prompts` and `eval_prompts` are the task's texts (what the verifier reads); the ids
  encode them through `chat_template` when it is set.
  """

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
  chat_template: Any = None


def build_tokenizer(config: Config, texts: Sequence[str], workdir: str):
  """The run's tokenizer, checked to have an end-of-sequence token.

  `--tokenizer` unset with `--init_from_hf`: the checkpoint's (with its chat template); a path:
  that tokenizer.json or .model; char/bpe/unigram: trained on the task's text into the workdir
  (deterministic given the texts, so a resumed run rebuilds the same tokenizer).
  """
  tok, flag = _load_tokenizer(config, texts, workdir)
  if tok.eos_id is None:
    raise FlagValueError(f'{flag}: the tokenizer has no end-of-sequence token, which ends '
                         'completions (set eos_token in its tokenizer_config.json)')
  return tok


def _load_tokenizer(config: Config, texts: Sequence[str], workdir: str):
  """`(tokenizer, the flag it comes from)`."""
  from rljax.data import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top
  if config.init_from_workdir:
    return (tok_lib.Tokenizer.load(os.path.join(config.init_from_workdir, 'tokenizer.model')),
            f'--init_from_workdir={config.init_from_workdir!r}')
  flag = f'--tokenizer={config.tokenizer!r}'
  try:
    if config.init_from_hf and not config.tokenizer:
      flag = f'--init_from_hf={config.init_from_hf!r}'
      return tok_lib.load_checkpoint_tokenizer(config.init_from_hf), flag
    if config.tokenizer.endswith('.json'):
      return tok_lib.HFTokenizer.load(config.tokenizer), flag
    if config.tokenizer.endswith('.model'):
      return tok_lib.Tokenizer.load(config.tokenizer), flag
  except Exception as e:  # pylint: disable=broad-except
    # The tokenizers library raises a plain Exception for a file it cannot parse.
    raise FlagValueError(f'{flag}: cannot load the tokenizer: {e}') from None
  prefix = os.path.join(workdir, 'tokenizer')
  # In a multi-process run process 0 trains and writes it (unless the workdir has it) and the
  # others load its file. Every process passes the barrier whether or not it finds the file: a
  # process that looked after process 0 had written it would otherwise skip the barrier that
  # process 0 waits at.
  from experiments import distributed  # pylint: disable=g-import-not-at-top
  tok = None
  if distributed.is_main_process() and not os.path.exists(prefix + '.model'):
    tok = tok_lib.Tokenizer.train(list(texts), vocab_size=config.vocab_size,
                                  model_type=config.tokenizer, model_prefix=prefix)
  distributed.barrier('tokenizer')
  return (tok if tok is not None else tok_lib.Tokenizer.load(prefix + '.model')), flag


def tokenizer_texts(task) -> list[str]:
  """The tokenizer's training corpus: training text of the task, independent of this run.

  It depends on the task only (never on the held-out split or on which examples this run
  draws), so runs that differ in RL flags share the same token ids and hence the same warm start.
  """
  from rljax.data import tasks  # pylint: disable=g-import-not-at-top
  return tasks.tokenizer_corpus(task, 2000, split='train')


def corrupt_demonstrations(examples: Sequence[Any], rate: float, seed: int, *,
                           task: Any = None, kind: str = 'random') -> list[Any]:
  """An imperfect teacher: a `rate` fraction of demonstrations are wrong.

  ``kind='random'``: a wrong demonstration is another problem's answer; one that happens to equal
  the original is kept (so slightly fewer than `rate` are wrong). ``kind='systematic'``: it is
  `task.systematic_error(example)`, the task's rule-like mistake, and `rate` is the fraction of
  the examples that mistake applies to (the others stay correct). Which examples are wrong, and
  whose answer each one receives, is a function of `seed`.
  """
  rng = np.random.default_rng([seed, 0x5EED])
  n = len(examples)
  wrong = rng.random(n) < rate
  if kind not in ('random', 'systematic'):
    raise ValueError(f"kind must be 'random' or 'systematic', got {kind!r}")
  if kind == 'systematic':
    flawed = [task.systematic_error(e) for e in examples]
    if all(f is None for f in flawed):
      raise ValueError(f'task {task.name!r} has no systematic error for any of the examples '
                       '(see its systematic_error)')
    return [dataclasses.replace(e, demonstration=f) if w and f is not None else e
            for e, w, f in zip(examples, wrong, flawed)]
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


def _examples(config: Config, task, flag: str, split: str, num: int, which: str) -> list[Any]:
  """`num` examples of `split` over the levels (and per-level counts) of `--{which}_levels`."""
  levels = config.levels(which)
  try:
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
  except ValueError as e:
    raise FlagValueError(f'{flag} (with --{which}_levels={getattr(config, which + "_levels")!r}) '
                         f'asks for more examples than the task has: {e}') from None


# Example counts of unset --sft_num_demos, --rl_pool_size and --eval_num.
DEFAULT_COUNTS = {'sft_num_demos': 20000, 'rl_pool_size': 20000, 'eval_num': 256}


def example_count(config: Config, task, name: str, split: str, reserved: int = 0) -> int:
  """The value of `--{name}`; unset, its default capped at what a fixed split can give.

  `reserved` examples of the split go to another phase first (the warm start's, kept out of a
  disjoint RL pool).
  """
  value = getattr(config, name)
  if value is not None:
    return value
  size = task.split_size(split)
  default = DEFAULT_COUNTS[name]
  return default if size is None else max(min(default, size - reserved), 1)


def _phase_examples(config: Config, task) -> tuple[list[Any], list[Any], list[Any]]:
  """The warm-start demonstrations, the RL pool and the held-out examples."""
  c = config
  sft = []
  if c.sft_steps:
    sft = _examples(c, task, '--sft_num_demos', 'train',
                    example_count(c, task, 'sft_num_demos', 'train'), 'sft')
  if c.demo_error_rate > 0 and sft:
    try:
      sft = corrupt_demonstrations(sft, c.demo_error_rate, c.seed, task=task, kind=c.demo_error)
    except ValueError as e:
      raise FlagValueError(f'--demo_error={c.demo_error}: {e}') from None
  pool = []
  if c.rl_steps and c.rl_pool_disjoint and sft:
    # Draw extra and drop the demonstrated prompts: RL sees problems the warm start did not.
    seen = {e.prompt for e in sft}
    num = example_count(c, task, 'rl_pool_size', 'train', reserved=len(seen))
    extra = _examples(c, task, '--rl_pool_size (+ --sft_num_demos, as --rl_pool_disjoint is '
                      'set)', 'train', num + len(seen), 'rl')
    pool = [e for e in extra if e.prompt not in seen][:num]
  elif c.rl_steps:
    pool = _examples(c, task, '--rl_pool_size', 'train',
                     example_count(c, task, 'rl_pool_size', 'train'), 'rl')
  evals = _examples(c, task, '--eval_num', 'test', example_count(c, task, 'eval_num', 'test'),
                    'eval')
  return sft, pool, evals


def build_task(config: Config):
  """The task of `--task` and `--task_args`, or of `--prompt_file` and its flags."""
  from rljax.data import tasks  # pylint: disable=g-import-not-at-top
  if not config.prompt_file and config.task != 'prompt_file':
    return tasks.get_task(config.task, seed=config.seed, **config.task_kwargs)
  if not config.prompt_file:
    try:
      return tasks.get_task('prompt_file', seed=config.seed, **config.task_kwargs)
    except (ValueError, TypeError, ImportError) as e:
      raise FlagValueError(f'--task=prompt_file --task_args={config.task_args}: {e} (or pass '
                           '--prompt_file)') from None
  verifier = None if config.verifier == 'none' else config.verifier or 'exact'
  try:
    return tasks.get_task('prompt_file', seed=config.seed, path=config.prompt_file,
                          prompt_field=config.prompt_field,
                          answer_field=config.answer_field or None, verifier=verifier,
                          **config.task_kwargs)
  except (ValueError, TypeError, ImportError) as e:
    raise FlagValueError(f'--prompt_file={config.prompt_file} (with --prompt_field, '
                         f'--answer_field, --verifier, --task_args): {e}') from None


def build_data(config: Config, workdir: str) -> Data:
  """Draws and encodes the examples of every phase; trains or loads the tokenizer."""
  from rljax.data import rewards  # pylint: disable=g-import-not-at-top
  task = build_task(config)
  sft, pool, evals = _phase_examples(config, task)
  tok = build_tokenizer(config, tokenizer_texts(task), workdir)
  if config.reward:
    reward = rewards.RewardFunction(config.reward, label=f'--reward={config.reward}',
                                    error_class=FlagValueError)
    task = rewards.TaskWithReward(task, reward, sft + pool + evals,
                                  correct_from_reward=config.verifier == 'none')
  template = tok.chat_template if config.chat_template else None
  # A chat template writes the bos token itself where the model expects one (transformers
  # encodes the rendered text without adding special tokens).
  add_bos = tok.bos_id is not None and template is None
  render = template.render_prompt if template is not None else (lambda p: p)
  # One width for every phase: the longest prompt of any of them.
  prompt_width = tok.encode_batch([render(e.prompt) for e in sft + pool + evals],
                                  add_bos=add_bos)[0].shape[1]
  completion_width = config.max_new_tokens
  sft_arrays = (None, None, None)
  if sft:
    try:
      seqs = tok.encode_sequences([render(e.prompt) for e in sft],
                                  [e.demonstration for e in sft],
                                  prompt_len=prompt_width, completion_len=completion_width,
                                  add_bos=add_bos)
    except ValueError as e:
      raise FlagValueError(f'a demonstration with EOS is longer than --max_new_tokens='
                           f'{completion_width}: {e}') from None
    sft_arrays = (seqs.tokens, seqs.prompt_mask + seqs.completion_mask, seqs.completion_mask)

  def prompts(examples):
    texts = [e.prompt for e in examples]
    return (texts, *tok.encode_batch([render(t) for t in texts], max_len=prompt_width,
                                     add_bos=add_bos))

  return Data(task, tok, prompt_width, completion_width, *sft_arrays, *prompts(pool),
              *prompts(evals), chat_template=template)
