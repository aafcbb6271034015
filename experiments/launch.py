r"""Launches one experiment: `python -m experiments.launch --flagfile=... --workdir=...`.

Every field of `experiments.config.Config` is a flag (`--helpfull` lists them with their valid
values). Flags are validated before anything is built: an invalid value exits at once with a
message naming the flag and the valid values, and so does a bad path, file or size found while
the run is built (before anything compiles): every user mistake is one `FATAL` line.

A `--workdir` that holds a run continues it: from its latest checkpoint, or, when it finished,
with the extra steps of a larger `--rl_steps` (with the same flags it reprints its summary). A
workdir whose run differs in a flag that changes the run is refused, the message listing the
flags, unless `--override` (`experiments.continuation`).

Example:
  python -m experiments.launch \
      --flagfile=experiments/configs/arithmetic_grpo.flags --workdir=/tmp/arith
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging

from experiments import malloc_defaults
from experiments import xla_defaults

xla_defaults.apply()  # before anything imports JAX
try:
  malloc_defaults.apply()  # with RLJAX_LARGE_BLOCK_MALLOC=1; before JAX starts its threads
except ValueError as e:
  sys.exit(f'FATAL {e}')  # a user's mistake: one line, no traceback

from experiments import distributed  # pylint: disable=g-import-not-at-top,wrong-import-position

from experiments import config as config_lib

flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and the summary '
                    '(a run restarted in the same workdir resumes).')
flags.mark_flag_as_required('workdir')
config_lib.define_flags()
# Multi-process runs (experiments/distributed.py): the same command on every process.
flags.DEFINE_enum('distributed', 'off', ['off', 'auto'],
                  "'auto': jax.distributed.initialize() detects the cluster from the environment "
                  "(Cloud TPU, SLURM, Open MPI, Kubernetes); 'off': one process unless "
                  '--coordinator_address is given.')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0, e.g. localhost:1234.')
flags.DEFINE_integer('num_processes', None, 'Number of processes of a multi-process run.')
flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1.')

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected positional arguments: {argv[1:]}')
  try:
    config = config_lib.config_from_flags(FLAGS)
    distributed.validate(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes,
                         FLAGS.process_id)
  except ValueError as e:
    # Same form as absl's own flag errors; exit status 2 (usage error).
    sys.stderr.write(f'FATAL Flags parsing error: {e}\n'
                     'Pass --helpshort or --helpfull to see help on flags.\n')
    sys.exit(2)
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO.
  # Before anything touches a device; validation above touches none.
  xla_defaults.set_cpu_devices(config.cpu_devices)
  distributed.initialize(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes,
                         FLAGS.process_id)
  # Imported after validation so that a bad flag fails before JAX starts.
  from experiments import train  # pylint: disable=g-import-not-at-top
  try:
    summary = train.train_and_evaluate(config, FLAGS.workdir)
  except config_lib.FlagValueError as e:
    sys.stderr.write(f'FATAL {e}\n')
    sys.exit(2)
  return 0 if summary else 1


def run():
  app.run(main)


if __name__ == '__main__':
  sys.exit(run())
