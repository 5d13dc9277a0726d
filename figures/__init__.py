"""Publication figures (`optscale plot`, `python -m figures`)."""
