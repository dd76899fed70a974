"""Manual labels as annotators deliver them (issue 24): lidarseg point labels of a keyframe sweep and 3D
boxes in nuScenes ``sample_annotation`` form, validated and turned into occupancy labels by accumulating
the scene's LiDAR (docs/ARCHITECTURE.md, "Manual labels as points and boxes")."""
