"""Evidence fusion (issue 20): occupancy labels from LiDAR accumulated over a window of keyframes, each
point named by a vote of the 2D labels of every camera and frame that sees it."""
