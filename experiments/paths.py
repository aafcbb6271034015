"""Start-up checks of the flags that name files: each missing file is one error naming its flag.

`Config.validate` calls `check_paths`, so a wrong path fails before JAX starts, with the path
that was looked for, instead of a traceback from whichever library first opens it.
"""

from __future__ import annotations

import os

# The weight files `rljax.models.hf.from_hf` reads (a single file or a sharded index).
HF_WEIGHTS = ('model.safetensors', 'model.safetensors.index.json')
# The tokenizer files of a Hugging Face checkpoint, in the order they are looked for.
HF_TOKENIZERS = ('tokenizer.json', 'tokenizer.model')


def check_paths(c) -> None:
  """Raises ValueError naming the flag of the first missing directory or file of `c`."""
  if c.init_from_hf:
    _check_hf_dir(c.init_from_hf, needs_tokenizer=not c.tokenizer)
  if c.tokenizer.endswith(('.json', '.model')) and not os.path.isfile(c.tokenizer):
    raise ValueError(f'--tokenizer={c.tokenizer!r}: no such file')
  if c.init_from_workdir:
    workdir = c.init_from_workdir
    if not os.path.isdir(workdir):
      raise ValueError(f'--init_from_workdir={workdir!r}: no such directory')
    if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
      raise ValueError(f'--init_from_workdir={workdir!r} has no checkpoints (no '
                       f'{os.path.join(workdir, "checkpoints")!r}); is it a finished run?')
    if not os.path.isfile(os.path.join(workdir, 'tokenizer.model')):
      raise ValueError(f'--init_from_workdir={workdir!r} has no tokenizer.model (only runs '
                       'with a tokenizer trained on the task text can be continued this way)')


def _check_hf_dir(directory: str, *, needs_tokenizer: bool) -> None:
  flag = f'--init_from_hf={directory!r}'
  if not os.path.isdir(directory):
    raise ValueError(f'{flag}: no such directory')
  if not os.path.isfile(os.path.join(directory, 'config.json')):
    raise ValueError(f'{flag} has no config.json (a Hugging Face checkpoint directory, as '
                     'written by save_pretrained, is expected)')
  if not any(os.path.isfile(os.path.join(directory, w)) for w in HF_WEIGHTS):
    raise ValueError(f'{flag} has no weights: neither of {list(HF_WEIGHTS)} exists (only '
                     'safetensors are read; save_pretrained writes them)')
  if needs_tokenizer and not any(os.path.isfile(os.path.join(directory, t))
                                 for t in HF_TOKENIZERS):
    raise ValueError(f'{flag} has no tokenizer: {os.path.join(directory, HF_TOKENIZERS[0])!r} '
                     f'does not exist (nor {HF_TOKENIZERS[1]}); pass --tokenizer=PATH to the '
                     "checkpoint's tokenizer.json or .model")
