"""Input adapters: files, stdin, Bundles and NDJSON in; patient records out."""

from .grouping import GroupedInput, group_entries
from .reader import Entry, read_bytes, read_path, read_value

__all__ = ["Entry", "GroupedInput", "group_entries", "read_bytes", "read_path", "read_value"]
