"""valuegate: signed evidence of the value that industrial equipment delivered to a plant."""

__version__ = "0.1.0"
