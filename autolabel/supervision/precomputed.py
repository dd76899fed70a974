"""Where precomputed 2D label maps live under a dataset root (the synthetic world's layout,
docs/SYNTHETIC.md); `providers.PrecomputedLabels` reads them."""

LABELS_2D_DIR = "labels2d"
