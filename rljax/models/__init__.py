"""rljax.models."""
