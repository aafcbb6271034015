"""rljax.sampling: jitted KV-cache sampling with behaviour log-probs.

`sample(model, prompt_tokens, prompt_mask, key, *, max_new_tokens, ...) -> Rollout`;
`sample_fn(graphdef, state, ...)` is the same on a split model, for use inside `jax.jit`.
"""

from rljax.sampling.filters import filter_logits, min_p_logits, top_k_logits, top_p_logits
from rljax.sampling.rollout import Rollout
from rljax.sampling.sampler import sample, sample_fn

__all__ = ["Rollout", "sample", "sample_fn", "filter_logits", "top_k_logits", "top_p_logits",
           "min_p_logits"]
