"""A module whose own code fails while it is imported (a missing model file, say): the CLI must
say so in one line naming the module and the exception, not print the import's traceback."""

from __future__ import annotations

raise RuntimeError("the model file models/never.pt is missing")
