"""Input adapters: files, stdin, Bundles and NDJSON in; patient records out."""

from .files import Inputs, discover, read_inputs, read_path
from .grouping import GroupedInput, group_entries
from .reader import Entry, read_bytes, read_value

__all__ = ["Entry", "GroupedInput", "Inputs", "discover", "group_entries", "read_bytes", "read_inputs", "read_path",
           "read_value"]
