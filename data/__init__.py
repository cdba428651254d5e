"""Embedded data shipped inside the package as `llmcourse.assets` (see data/README.md for sources and licence)."""
