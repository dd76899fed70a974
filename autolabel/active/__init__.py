"""Active selection: which frames are most worth a manual 3D label, and annotation rounds."""
