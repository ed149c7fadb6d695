"""SpecOps: speculative decoding on vLLM, budgeted, watched and rolled back when it hurts."""

__version__ = "0.1.0.dev0"
