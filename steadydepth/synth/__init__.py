"""Synthetic benchmark: procedural scenes with exact depth, poses and K, and a simulated teacher."""
