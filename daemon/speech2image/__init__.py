"""speech2image: say a wake word, then what you want to see."""

__version__ = "0.1.0"
