"""rljax.train: the training batch, the jitted sharded updates, mesh, checkpoints and metrics.

* `TrainBatch`: the sampler's `Rollout` composed with rewards, advantages and group ids.
* `make_rl_update` / `make_sft_step` (module `rljax.train.train_step`): jitted updates over a
  mesh; the estimator is chosen by name from `ESTIMATORS`.
* `make_mesh`, `param_shardings`, `shard_batch` (module `rljax.train.mesh`).
* `Checkpointer` (module `rljax.train.checkpoint`): orbax, with fallback to the previous step.
* `create_default_writer` (module `rljax.train.metrics`): console, JSONL and TensorBoard.
"""

from rljax.train.checkpoint import CheckpointFallbackWarning
from rljax.train.checkpoint import Checkpointer
from rljax.train.estimators import ESTIMATORS
from rljax.train.estimators import EstimatorSpec
from rljax.train.estimators import LossInputs
from rljax.train.estimators import compute_advantages
from rljax.train.mesh import make_mesh
from rljax.train.mesh import param_shardings
from rljax.train.mesh import shard_batch
from rljax.train.metrics import create_default_writer
from rljax.train.metrics import read_jsonl
from rljax.train.batch import TrainBatch
from rljax.train.train_step import LossConfig
from rljax.train.train_step import OptimizerConfig
from rljax.train.train_step import TrainState
from rljax.train.train_step import init_train_state
from rljax.train.train_step import make_optimizer
from rljax.train.train_step import make_rl_update
from rljax.train.train_step import make_sft_step

__all__ = [
    'CheckpointFallbackWarning', 'Checkpointer', 'ESTIMATORS', 'EstimatorSpec', 'LossConfig',
    'LossInputs', 'OptimizerConfig', 'TrainBatch', 'TrainState', 'compute_advantages',
    'create_default_writer', 'init_train_state', 'make_mesh', 'make_optimizer',
    'make_rl_update', 'make_sft_step', 'param_shardings', 'read_jsonl', 'shard_batch',
]
