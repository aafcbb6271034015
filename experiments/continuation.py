"""Continuing a run in its workdir: which flags a continuation may change, and the check.

A workdir holds the `config.json` of the run that started it. A new run in the same workdir
continues that run (from its latest checkpoint), so it must compute the same thing: a flag that
changes what the run computes may not differ, unless `--override` says the user means it. Growing
`--rl_steps` is allowed: the finished run then trains the extra steps.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from experiments.config import FlagValueError

# Flags that do not change what a run computes, so a continuation may change them:
# - where and how often it reports (console, TensorBoard, the metric cadence);
# - how often it checkpoints and how many it keeps (the state saved is the same);
# - the evaluation cadence (evaluations draw from their own random stream and leave the
#   training state untouched, so training is the same with more or fewer of them);
# - the device mesh and --cpu_devices (where the arrays live, not what is computed; restored
#   checkpoints are resharded onto the new mesh; only the order of floating-point reductions
#   may change);
# - --override itself, and --hf_tokenizer (deprecated, no effect).
RUN_INVARIANT_FLAGS = frozenset({
    'console', 'tensorboard', 'log_every', 'checkpoint_every', 'keep_checkpoints',
    'eval_every', 'sft_eval_every', 'mesh_data', 'mesh_fsdp', 'mesh_tensor', 'cpu_devices',
    'override', 'hf_tokenizer',
})

# Flags that change the shape or meaning of the checkpointed state (parameter shapes, token ids,
# optimizer and curriculum state, the prompt pool the curriculum's arms index, the step at which
# RL starts, the RNG), so a checkpoint cannot be continued under new values even with
# --override: restoring it against another structure would fail, and a failed restore is
# treated as a corrupted checkpoint.
STATE_FLAGS = frozenset({
    'seed', 'task', 'task_args', 'sft_steps', 'sft_levels', 'sft_num_demos', 'rl_levels',
    'rl_pool_size', 'rl_pool_disjoint', 'tokenizer', 'vocab_size', 'model', 'd_model',
    'num_layers', 'num_heads', 'ffn_dim', 'init_from_hf', 'init_from_workdir', 'optimizer',
    'curriculum', 'curriculum_args', 'rollout_staleness', 'lora_rank', 'lora_targets',
    'prompt_file', 'prompt_field',
})

CONFIG_NAME = 'config.json'
_MISSING = '<not a flag>'


def differing_flags(saved: dict[str, Any], config) -> list[tuple[str, Any, Any]]:
  """`(flag, saved value, this run's value)` of each flag that changes the run.

  A flag absent from `saved` (added since that run) counts as its default there.
  """
  current = json.loads(json.dumps(dataclasses.asdict(config)))
  defaults = {f.name: f.default for f in dataclasses.fields(config)}
  out = []
  for name in sorted(set(saved) | set(current)):
    if name in RUN_INVARIANT_FLAGS:
      continue
    old = saved.get(name, defaults.get(name, _MISSING))
    new = current.get(name, _MISSING)
    if name == 'rl_steps' and isinstance(old, int) and isinstance(new, int) and new >= old:
      continue  # More RL steps: the run continues past its old end.
    if old != new:
      out.append((name, old, new))
  return out


def check_workdir(workdir: str, config) -> list[tuple[str, Any, Any]]:
  """Refuses a workdir whose run differs from `config` in a flag that changes the run.

  Returns:
    The differing flags accepted with `--override` (empty without a saved config).

  Raises:
    FlagValueError: one line listing the differing flags with their saved and new values.
  """
  path = os.path.join(workdir, CONFIG_NAME)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    saved = json.load(f)
  diffs = differing_flags(saved, config)
  fixed = [d for d in diffs if d[0] in STATE_FLAGS]
  if fixed and config.override:
    listed = '; '.join(f'--{n}: {o!r} there, {v!r} now' for n, o, v in fixed)
    raise FlagValueError(
        f'--workdir={workdir!r} holds a run whose checkpoints do not fit this one ({listed}), '
        'even with --override: these flags change the saved state; pick another --workdir')
  if diffs and not config.override:
    listed = '; '.join(f'--{n}: {o!r} there, {v!r} now' for n, o, v in diffs)
    raise FlagValueError(
        f'--workdir={workdir!r} holds a run whose flags differ from this one\'s in ways that '
        f'change the run ({listed}); rerun with its flags, pick another --workdir, or pass '
        '--override to continue it with the new ones')
  return diffs


def format_diffs(diffs: list[tuple[str, Any, Any]]) -> str:
  return ', '.join(f'--{n} {o!r} -> {v!r}' for n, o, v in diffs)
