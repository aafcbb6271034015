"""rljax: policy-gradient estimators for RL fine-tuning of language models, in JAX.

Every estimator is a pure function of log-probabilities, advantages and masks returning
`LossOutput(loss, metrics)`. Importing `rljax` pulls in jax and numpy only; the harness
sub-packages (`rljax.models`, `rljax.sampling`, `rljax.data`, `rljax.train`) are imported
explicitly and load flax, optax, orbax and TFDS themselves.
"""

from rljax._src.advantages import discounted_returns
from rljax._src.advantages import gae_advantages
from rljax._src.advantages import global_baseline_advantages
from rljax._src.advantages import GROUP_SCALES
from rljax._src.advantages import group_advantages
from rljax._src.advantages import rloo_advantages
from rljax._src.aggregation import aggregate
from rljax._src.aggregation import AGGREGATION_MODES
from rljax._src.aggregation import aggregation_normalizer
from rljax._src.aggregation import masked_mean
from rljax._src.cispo import cispo_loss
from rljax._src.copg import copg_loss
from rljax._src.entropy_cov import clip_cov_loss
from rljax._src.entropy_cov import clip_cov_selection
from rljax._src.entropy_cov import kl_cov_loss
from rljax._src.entropy_cov import kl_cov_selection
from rljax._src.entropy_cov import token_covariance
from rljax._src.group_reinforce import asymre_advantages
from rljax._src.group_reinforce import asymre_loss
from rljax._src.group_reinforce import opmd_advantages
from rljax._src.group_reinforce import OPMD_BASELINES
from rljax._src.group_reinforce import OPMD_LEVELS
from rljax._src.group_reinforce import opmd_loss
from rljax._src.group_reinforce import rec_loss
from rljax._src.group_reinforce import REC_VARIANTS
from rljax._src.kl import kl_divergence
from rljax._src.kl import KL_ESTIMATORS
from rljax._src.logits import entropy_from_logits
from rljax._src.logits import token_logp_from_logits
from rljax._src.off_policy import ImportanceWeights
from rljax._src.off_policy import IS_LEVELS
from rljax._src.off_policy import IS_MODES
from rljax._src.off_policy import truncated_is_weights
from rljax._src.ppo import ppo_clip_loss
from rljax._src.ppo import PPO_LEVELS
from rljax._src.ratios import effective_sample_size
from rljax._src.ratios import importance_ratio
from rljax._src.ratios import log_ratio
from rljax._src.ratios import RATIO_LEVELS
from rljax._src.ratios import sequence_logp
from rljax._src.regularizers import entropy_bonus
from rljax._src.regularizers import kl_penalty_loss
from rljax._src.reinforce import reinforce_loss
from rljax._src.topr import topr_loss
from rljax._src.types import LossOutput

__version__ = "0.1.0"
