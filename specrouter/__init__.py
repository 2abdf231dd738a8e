"""SpecRouter: adaptive routing for multi-level speculative decoding (CLI and experiments)."""

__version__ = "0.1.0"
