"""lmlab: train, look inside, compare and sample language models on your own text."""

__version__ = "0.1.0"
