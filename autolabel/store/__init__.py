"""Zarr storage of per-frame arrays: the 2D supervision cache and the pseudo-label store."""
