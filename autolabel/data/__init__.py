"""Frames, datasets and the Occ3D file format."""
