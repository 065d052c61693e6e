"""Enforcement backends: each applies diffs of the effective state."""
