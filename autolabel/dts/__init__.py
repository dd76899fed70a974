"""Depth-aware Teacher-Student: an EMA teacher that turns unlabeled frames into 3D pseudo-labels."""
