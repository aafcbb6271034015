"""rljax.data."""
