"""Tiny Hugging Face checkpoints for the launcher tests, written by transformers itself.

`write_checkpoint(directory)` saves a 1-layer `LlamaForCausalLM` and a character-level
`tokenizers` WordLevel tokenizer of the arithmetic task's characters (`tokenizer.json`,
`tokenizer_config.json`, the chat template), as `save_pretrained` lays them out.
"""

import json
import os

CHARS = list('0123456789+-*=')
SPECIALS = ['<unk>', '<s>', '</s>', '<|user|>', '<|assistant|>']
# Uses what transformers' renderer offers: the bos_token variable, raise_exception, loop state.
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
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


def write_checkpoint(directory, *, vocab_size: int = 32, eos: bool = True,
                     template: bool = True, tokenizer: bool = True, extra_tokens: int = 0):
  """Writes a checkpoint to `directory`; returns its path as a string.

  Args:
    directory: where to write (created).
    vocab_size: the model's embedding rows (>= the tokenizer's ids unless testing the error).
    eos: give the tokenizer an end-of-sequence token (`</s>` in tokenizer_config.json).
    template: write the chat template.
    tokenizer: write the tokenizer files at all.
    extra_tokens: ids beyond the task's characters (to exceed `vocab_size`).
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  directory = os.fspath(directory)
  torch.manual_seed(0)
  config = transformers.LlamaConfig(
      vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2 if eos else None)
  transformers.LlamaForCausalLM(config).save_pretrained(directory)
  if os.path.exists(os.path.join(directory, 'generation_config.json')):
    os.remove(os.path.join(directory, 'generation_config.json'))
  if not tokenizer:
    return directory
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=build_tokenizer(extra_tokens), bos_token='<s>',
      eos_token='</s>' if eos else None, unk_token='<unk>')
  if template:
    fast.chat_template = TEMPLATE
  fast.save_pretrained(directory)
  if not eos:  # save_pretrained may still record an eos token; the test wants none anywhere.
    path = os.path.join(directory, 'tokenizer_config.json')
    with open(path) as f:
      cfg = json.load(f)
    cfg.pop('eos_token', None)
    with open(path, 'w') as f:
      json.dump(cfg, f)
  return directory
