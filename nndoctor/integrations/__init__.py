"""Callbacks that watch a Lightning or Hugging Face training run (SPEC §8)."""
