"""The one exception type the explorer raises for anything a user can fix.

Every message is a single line that names what was wrong (file, field, model) and what to do
next; the command line prints it as ``error: <message>`` and exits with status 2.
"""

from __future__ import annotations


class ExplorerError(Exception):
    """A problem with the user's input or set-up, explained in one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
