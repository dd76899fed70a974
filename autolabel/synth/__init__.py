"""The synthetic driving world: procedural streets and objects with exact 3D ground truth, written
in nuScenes layout (see docs/SYNTHETIC.md)."""
