r"""Writes a tiny Hugging Face Llama checkpoint and a GSM8K-format prompt set, for the README's
worked example of fine-tuning a Hugging Face model from the launcher (no download needed).

    python scripts/make_tiny_hf_checkpoint.py --out=/tmp/tiny_llama --data=/tmp/word_problems

writes

* ``/tmp/tiny_llama``: ``config.json`` and ``model.safetensors`` of a randomly initialised
  ``LlamaForCausalLM`` (2 layers, hidden 64, 4 heads, 2 KV heads), saved by transformers, with a
  ``tokenizer.json`` (a byte-level BPE trained by the ``tokenizers`` library on the prompt set),
  ``tokenizer_config.json`` with a ChatML chat template, and ``generation_config.json``;
* ``/tmp/word_problems/{train,test}.jsonl``: one-step word problems in the GSM8K format
  (``{"question": ..., "answer": "<working>\n#### <number>"}``).

Needs the ``hf`` extra (torch, transformers, tokenizers).
"""

from __future__ import annotations

import json
import os
import random
import sys

from absl import app
from absl import flags

flags.DEFINE_string('out', None, 'Directory of the checkpoint (created; must be empty or absent).')
flags.DEFINE_string('data', None, 'Directory of the prompt files (created).')
flags.DEFINE_integer('num_train', 2000, 'Training problems.')
flags.DEFINE_integer('num_test', 200, 'Held-out problems.')
flags.DEFINE_integer('vocab_size', 512, 'BPE vocabulary size (special tokens included).')
flags.DEFINE_integer('seed', 0, 'Seed of the problems and the weights.')
flags.mark_flags_as_required(['out', 'data'])
FLAGS = flags.FLAGS

SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>']
# ChatML, as Qwen2.5-Instruct writes it (without the default system prompt).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
_NAMES = ('Ana', 'Ben', 'Chen', 'Dara', 'Eli', 'Fay', 'Gus', 'Hana')
_ITEMS = ('apples', 'books', 'coins', 'stamps', 'shells', 'pens')


def word_problem(rng: random.Random) -> dict[str, str]:
  """One addition or subtraction word problem with its GSM8K-format worked answer."""
  name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
  a, b = rng.randint(2, 20), rng.randint(2, 20)
  if rng.random() < 0.5:
    question = f'{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?'
    working, answer = f'{a} + {b} = {a + b}', a + b
  else:
    a = a + b
    question = f'{name} has {a} {item} and gives away {b}. How many {item} are left?'
    working, answer = f'{a} - {b} = {a - b}', a - b
  return {'question': question, 'answer': f'{working}\n#### {answer}'}


def write_problems(directory: str, num_train: int, num_test: int, seed: int) -> list[str]:
  """Writes train.jsonl and test.jsonl (disjoint questions); returns every text written."""
  os.makedirs(directory, exist_ok=True)
  rng, seen, texts = random.Random(seed), set(), []
  for split, num in (('train', num_train), ('test', num_test)):
    with open(os.path.join(directory, f'{split}.jsonl'), 'w', encoding='utf-8') as f:
      written = 0
      while written < num:
        record = word_problem(rng)
        if record['question'] in seen:
          continue
        seen.add(record['question'])
        f.write(json.dumps(record) + '\n')
        texts.append(record['question'] + '\n' + record['answer'])
        written += 1
  return texts


def train_tokenizer(texts: list[str], vocab_size: int):
  """A byte-level BPE `tokenizers.Tokenizer` trained on `texts` and the chat markup."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top,g-multiple-import
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(texts + ['user', 'assistant', 'system'], trainer)
  return tok


def write_checkpoint(out: str, texts: list[str], vocab_size: int, seed: int) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=train_tokenizer(texts, vocab_size), eos_token='<|im_end|>',
      pad_token='<|endoftext|>')
  fast.chat_template = CHAT_TEMPLATE
  cfg = transformers.LlamaConfig(
      vocab_size=len(fast), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
      rope_theta=10000.0, tie_word_embeddings=False, eos_token_id=fast.eos_token_id,
      pad_token_id=fast.pad_token_id, bos_token_id=None)
  torch.manual_seed(seed)
  model = transformers.LlamaForCausalLM(cfg)
  model.generation_config.eos_token_id = fast.eos_token_id
  model.generation_config.pad_token_id = fast.pad_token_id
  model.save_pretrained(out, safe_serialization=True)
  fast.save_pretrained(out)


def main(argv) -> int:
  del argv
  if os.path.isdir(FLAGS.out) and os.listdir(FLAGS.out):
    sys.stderr.write(f'FATAL --out={FLAGS.out!r} exists and is not empty\n')
    return 2
  texts = write_problems(FLAGS.data, FLAGS.num_train, FLAGS.num_test, FLAGS.seed)
  write_checkpoint(FLAGS.out, texts, FLAGS.vocab_size, FLAGS.seed)
  print(f'wrote {FLAGS.out} (tiny Llama, tokenizer.json, chat template) and '
        f'{FLAGS.data}/train.jsonl ({FLAGS.num_train}), test.jsonl ({FLAGS.num_test})')
  return 0


if __name__ == '__main__':
  app.run(main)
