"""Frames -> tensors for the occupancy network (images, calibration, LiDAR depth, 2D labels, 3D labels)."""
