"""kdsearch: find the best knowledge-distillation settings for a small student network."""
__version__ = "0.4.0"  # the one source: pyproject.toml reads it
