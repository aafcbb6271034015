"""rljax.models: a Flax NNX Llama/Qwen2 decoder and teacher-forced scoring.

See `rljax.models.transformer` for the parameter layout (it mirrors Hugging Face).
"""

from rljax.models.config import TransformerConfig
from rljax.models.scoring import logp_from_hidden, score, score_fn
from rljax.models.transformer import Transformer, positions_from_mask

__all__ = ["Transformer", "TransformerConfig", "logp_from_hidden", "positions_from_mask",
           "score", "score_fn"]
