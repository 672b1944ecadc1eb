"""tuitrain: a terminal training monitor for PyTorch image classifiers."""

__version__ = "0.1.0"
