"""rljax.sampling."""
