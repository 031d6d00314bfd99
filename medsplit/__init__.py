"""medsplit: a healthcare split-learning benchmark."""

__version__ = "0.1.0"
