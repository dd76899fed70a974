"""occnet."""
