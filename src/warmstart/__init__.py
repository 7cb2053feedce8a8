"""warmstart: fine-tune pretrained models with a chosen strategy, measured and compared."""

__version__ = "0.1.0"
