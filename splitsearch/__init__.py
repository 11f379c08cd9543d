"""splitsearch: search how to split deep networks under a parameter/MACs budget."""

__version__ = "0.1.0"
