"""kdsearch: find the best knowledge-distillation settings for a small student network."""
__version__ = "0.1.1"
