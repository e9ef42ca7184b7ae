"""How a value from the study file and a "did you mean" appear in a one-line error (every error shares them)."""

from __future__ import annotations

import difflib
from typing import Any


def suggest(word: str, options: Any) -> str:
    """' (did you mean X?)' for the closest of `options`, or '' when none is close."""
    match = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def short(value: Any, limit: int = 60) -> str:
    """`repr` of a value from the file, cut to fit an error line."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"a nested {type(value).__name__}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(message: str) -> str:
    """A key or value holding a line break (valid YAML) must not split the error over lines."""
    return message.replace("\r", "\\r").replace("\n", "\\n")
