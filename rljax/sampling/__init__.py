"""rljax.sampling: jitted KV-cache sampling with behaviour log-probs.

`sample(model, prompt_tokens, prompt_mask, key, *, max_new_tokens, ...) -> Rollout`;
`sample_fn(graphdef, state, ...)` is the same on a split model, for use inside `jax.jit`;
`sample_jit` is `sample_fn` jitted with `STATIC_ARGNAMES` static (what `sample` calls).
"""

from rljax.sampling.filters import filter_logits, min_p_logits, top_k_logits, top_p_logits
from rljax.sampling.rollout import Rollout
from rljax.sampling.sampler import STATIC_ARGNAMES, sample, sample_fn, sample_jit

__all__ = ["Rollout", "STATIC_ARGNAMES", "sample", "sample_fn", "sample_jit", "filter_logits",
           "top_k_logits", "top_p_logits", "min_p_logits"]
