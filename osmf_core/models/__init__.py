"""Model architectures (no training loops here: see osmf_core/training/)."""
