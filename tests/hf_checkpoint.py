"""Tiny Hugging Face checkpoints for the launcher tests, written by transformers itself.

`write_checkpoint(directory)` saves a 1-layer `LlamaForCausalLM` and a character-level
`tokenizers` WordLevel tokenizer of the arithmetic task's characters (`tokenizer.json`,
`tokenizer_config.json`, the chat template), as `save_pretrained` lays them out.
"""

import json
import os

CHARS = list('0123456789+-*=')
SPECIALS = ['<unk>', '<s>', '</s>', '<|user|>', '<|assistant|>']
# Uses what transformers' renderer offers: the special-token variables (pad_token is unset in
# these checkpoints, so it renders empty), raise_exception, loop state.
TEMPLATE = (
    "{{ bos_token }}{{ pad_token }}{% for m in messages %}"
    "{% if m['role'] not in ['user', 'assistant'] %}"
    "{{ raise_exception('only user and assistant turns') }}{% endif %}"
    "<|{{ m['role'] }}|>{{ m['content'] }}{% if not loop.last %}{{ eos_token }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")


def build_tokenizer(extra_tokens: int = 0):
  """A `tokenizers.Tokenizer`: one id per special token and character (+ `extra_tokens`)."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, pre_tokenizers  # pylint: disable=g-import-not-at-top
  pieces = SPECIALS + CHARS + [f'x{i}' for i in range(extra_tokens)]
  tok = tokenizers.Tokenizer(models.WordLevel({p: i for i, p in enumerate(pieces)},
                                              unk_token='<unk>'))
  tok.pre_tokenizer = pre_tokenizers.Split(tokenizers.Regex('.'), behavior='isolated')
  tok.decoder = decoders.Fuse()
  tok.add_special_tokens(SPECIALS)
  return tok


def write_checkpoint(directory, *, vocab_size: int = 32, tokenizer: bool = True, **kwargs):
  """Writes a model (`write_model`) and its tokenizer (`write_tokenizer`, given `kwargs`)."""
  write_model(directory, vocab_size=vocab_size)
  if tokenizer:
    write_tokenizer(directory, **kwargs)
  return os.fspath(directory)


def write_model(directory, *, vocab_size: int = 32) -> str:
  """Saves a 1-layer `LlamaForCausalLM` with `vocab_size` embedding rows to `directory`."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  directory = os.fspath(directory)
  torch.manual_seed(0)
  config = transformers.LlamaConfig(
      vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
  transformers.LlamaForCausalLM(config).save_pretrained(directory)
  # The tokenizer files alone decide the special tokens in these tests.
  if os.path.exists(os.path.join(directory, 'generation_config.json')):
    os.remove(os.path.join(directory, 'generation_config.json'))
  return directory


def write_tokenizer(directory, *, eos: bool = True, template: bool = True,
                    extra_tokens: int = 0) -> None:
  """Saves the tokenizer as transformers' `save_pretrained` does.

  Args:
    directory: where to write.
    eos: give the tokenizer an end-of-sequence token (`</s>`).
    template: write the chat template.
    extra_tokens: ids beyond the task's characters (to exceed a model's vocabulary).
  """
  import transformers  # pylint: disable=g-import-not-at-top
  directory = os.fspath(directory)
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=build_tokenizer(extra_tokens), bos_token='<s>',
      eos_token='</s>' if eos else None, unk_token='<unk>')
  if template:
    fast.chat_template = TEMPLATE
  fast.save_pretrained(directory)
  path = os.path.join(directory, 'tokenizer_config.json')
  with open(path) as f:
    cfg = json.load(f)
  if not eos and cfg.pop('eos_token', None) is not None:
    with open(path, 'w') as f:
      json.dump(cfg, f)
