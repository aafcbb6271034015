r"""Exports a run's policy as a Hugging Face checkpoint: `python -m experiments.export`.

    python -m experiments.export --workdir=/tmp/run --out=/tmp/run_hf

The run's `config.json` rebuilds the model, the tokenizer and the state template exactly as the
run built them (on a one-device mesh); the latest checkpoint (or `--step`) gives the policy's
parameters, with LoRA adapters merged into the base weights (`W + (alpha / r) (A B)^T`). `--out`
receives what `transformers.AutoModelForCausalLM.from_pretrained` reads (`config.json`,
`model.safetensors`, `rljax.models.hf.to_hf`) and the tokenizer:

* a run on an `--init_from_hf` checkpoint with its Hugging Face tokenizer: the checkpoint's
  tokenizer files (`tokenizer.json`, `tokenizer_config.json`, ...), copied;
* a run with a task tokenizer (sentencepiece, trained or `--tokenizer=*.model`): its
  `tokenizer.model` (for `sentencepiece` or `rljax.data.tokenizer.Tokenizer.load`), and the
  same tokenizer as `tokenizer.json` + `tokenizer_config.json` for `transformers.AutoTokenizer`
  (`rljax.data.hf_tokenizer`; it prepends BOS as the launcher does to prompts). A sentencepiece
  model that `tokenizers` cannot express exactly (a `.model` file trained elsewhere with another
  normalisation, say) gets no `tokenizer.json`, with a warning.

The token ids of the tokenizer's end-of-sequence, beginning-of-sequence and padding tokens are
written into `config.json` and `generation_config.json`, so `generate` stops where the sampler
did. A `--workdir` without a checkpoint and an `--out` that exists and is not empty are one-line
errors.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Any

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags (defined when run as a script, so importing this module as a
  library next to `experiments.launch`, which also defines `--workdir`, is possible)."""
  flags.DEFINE_string('workdir', None, 'Workdir of a run (its config.json and checkpoints).')
  flags.DEFINE_string('out', None, 'Output directory of the Hugging Face checkpoint (must not '
                      'exist, or be empty).')
  flags.DEFINE_integer('step', None, 'Checkpoint step to export (default: the latest).')
  flags.mark_flags_as_required(['workdir', 'out'])

# Tokenizer files of a Hugging Face checkpoint that travel with the exported policy.
HF_TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json',
                      'tokenizer.model', 'vocab.json', 'merges.txt', 'added_tokens.json',
                      'chat_template.jinja', 'chat_template.json')


class ExportError(ValueError):
  """A bad `--workdir` / `--out` / `--step`, printed as one line by `main`."""


def load_run_config(workdir: str):
  """The `Config` a run wrote to `<workdir>/config.json`, on a one-device mesh.

  `--cpu_devices` is reset too: export runs on JAX's default devices whatever the run used.
  """
  from experiments.config import Config  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    raise ExportError(f'--workdir={workdir!r} has no config.json: not the workdir of a run')
  with open(path) as f:
    values = json.load(f)
  try:
    config = Config(**values)
  except TypeError as e:
    raise ExportError(f'--workdir={workdir!r}: config.json does not match this version of '
                      f'the launcher ({e})') from None
  return config.replace(mesh_data=1, mesh_fsdp=1, mesh_tensor=1, cpu_devices=0)


def check_paths(workdir: str, out: str) -> None:
  """One-line errors for a workdir without checkpoints and an existing non-empty `out`."""
  if not os.path.isdir(workdir):
    raise ExportError(f'--workdir={workdir!r} does not exist')
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  steps = [d for d in os.listdir(ckpt_dir) if d.isdigit()] if os.path.isdir(ckpt_dir) else []
  if not steps:
    raise ExportError(f'--workdir={workdir!r} has no checkpoint (nothing under {ckpt_dir})')
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise ExportError(f'--out={out!r} exists and is not empty; give a new directory')


def _restore(harness, step: int | None):
  try:
    template = harness._state_template  # pylint: disable=protected-access
    restored = harness.checkpointer.restore(template, step=step)
  except FileNotFoundError:
    raise ExportError(f'--step={step} is not a checkpoint of --workdir={harness.workdir!r} '
                      f'(steps: {harness.checkpointer.all_steps()})') from None
  if restored is None:
    raise ExportError(f'--workdir={harness.workdir!r} has no checkpoint')
  return restored


def write_tokenizer(config, tok, out: str) -> list[str]:
  """Writes the run's tokenizer into `out` (see the module docstring); returns the files."""
  from rljax.data import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top
  if isinstance(tok, tok_lib.HFTokenizer):
    names = [n for n in HF_TOKENIZER_FILES
             if os.path.isfile(os.path.join(config.init_from_hf, n))]
    for n in names:
      shutil.copy(os.path.join(config.init_from_hf, n), os.path.join(out, n))
    return names
  from rljax.data import hf_tokenizer  # pylint: disable=g-import-not-at-top
  before = set(os.listdir(out))
  tok.save(os.path.join(out, 'tokenizer.model'))
  try:
    # The launcher prepends BOS to every prompt when the tokenizer has one (experiments.data).
    hf_tokenizer.write_hf_tokenizer(tok, out, add_bos=tok.bos_id is not None)
  except ValueError as e:
    logging.warning('no tokenizer.json written: %s', e)
  return sorted(set(os.listdir(out)) - before)


def _write_special_ids(tok, out: str) -> None:
  ids = {'bos_token_id': tok.bos_id, 'eos_token_id': tok.eos_id, 'pad_token_id': tok.pad_id}
  ids = {k: int(v) for k, v in ids.items() if v is not None}
  path = os.path.join(out, 'config.json')
  with open(path) as f:
    hf_config = json.load(f)
  hf_config.update(ids)
  with open(path, 'w') as f:
    json.dump(hf_config, f, indent=2, sort_keys=True)
  with open(os.path.join(out, 'generation_config.json'), 'w') as f:
    json.dump(dict(ids, _from_model_config=True), f, indent=2, sort_keys=True)


def export(workdir: str, out: str, *, step: int | None = None) -> dict[str, Any]:
  """Writes the policy of `workdir`'s checkpoint (LoRA merged) and its tokenizer to `out`.

  Returns:
    `{'step', 'out', 'lora_rank', 'tokenizer_files'}`.
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from experiments.train import Harness  # pylint: disable=g-import-not-at-top
  from rljax.models import hf  # pylint: disable=g-import-not-at-top
  workdir, out = os.path.abspath(workdir), os.path.abspath(out)
  check_paths(workdir, out)
  config = load_run_config(workdir)
  harness = Harness(config, workdir)
  try:
    saved_step, state, _ = _restore(harness, step)
    params = harness.policy_params(state['train'].params)
    model = nnx.merge(harness.graphdef, params)
    hf.to_hf(model, out)
  finally:
    harness.close()
  _write_special_ids(harness.tok, out)
  files = write_tokenizer(config, harness.tok, out)
  return {'step': saved_step, 'out': out, 'lora_rank': config.lora_rank,
          'tokenizer_files': files}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected positional arguments: {argv[1:]}')
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  try:
    check_paths(FLAGS.workdir, FLAGS.out)  # before JAX starts
    from experiments.config import FlagValueError  # pylint: disable=g-import-not-at-top
  except ExportError as e:
    sys.stderr.write(f'FATAL {e}\n')
    sys.exit(2)
  try:
    result = export(FLAGS.workdir, FLAGS.out, step=FLAGS.step)
  except (ExportError, FlagValueError) as e:
    sys.stderr.write(f'FATAL {e}\n')
    sys.exit(2)
  lora = f', LoRA rank {result["lora_rank"]} merged' if result['lora_rank'] else ''
  print(f'exported step {result["step"]}{lora} to {result["out"]} '
        f'(tokenizer: {", ".join(result["tokenizer_files"])})')
  return 0


if __name__ == '__main__':
  define_flags()
  app.run(main)
