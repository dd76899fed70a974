"""autolabel."""
