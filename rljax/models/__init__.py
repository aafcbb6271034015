"""rljax.models: a Flax NNX Llama/Qwen2 decoder and teacher-forced scoring.

See `rljax.models.transformer` for the parameter layout (it mirrors Hugging Face).
"""

from rljax.models.config import TransformerConfig
from rljax.models.transformer import Transformer, positions_from_mask

__all__ = ["Transformer", "TransformerConfig", "positions_from_mask"]
