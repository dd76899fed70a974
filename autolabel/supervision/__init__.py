"""2D supervision: LiDAR depth maps, foundation-model semantics, precomputed maps."""
