"""Errors a user can cause.

A `WarmstartError` carries a one-line message that names the file, column or key at fault and
says what to do. The command line prints it and exits with status 2, without a traceback;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class WarmstartError(Exception):
    """A problem with the user's input (config, data, paths), reported in one line."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
