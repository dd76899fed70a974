"""Figures (PNG) and HTML pages people look at."""
