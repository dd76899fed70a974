"""autolabel: dense 3D semantic occupancy labels from cameras, LiDAR and 2D foundation-model labels."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("occ-autolabel")
except PackageNotFoundError:  # imported from a source tree that was never pip-installed: no metadata to read
    __version__ = "unknown"
