"""Training of a round's network: rendering losses, the DTS teacher, manual and fused 3D labels, the
occupancy threshold calibrated against LiDAR. The network's input is `autolabel.network_input.FrameDataset`."""
