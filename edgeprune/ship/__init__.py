"""Shipping (placeholder docstring, replaced below)."""
