"""The detector manifest and Triton configs, packaged as data (no code): see server/engine/weights.py."""
