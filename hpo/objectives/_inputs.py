"""Reading the files a user hands to `hpo predict`, for an objective's ``read_inputs`` hook.

Every way a file can be unusable (missing, a folder, unreadable, far too big) is a :class:`FieldError`
naming the file and what the objective accepts, which `hpo predict` prints as one line (exit 2).
"""

from __future__ import annotations

from pathlib import Path

from hpo.objectives._table import FieldError


def read_input_file(path: str | Path, *, accepted: str, max_bytes: int = 256 * 2**20) -> bytes:
    """The bytes of one input file; `accepted` says in words what the objective reads (for the error)."""
    file = Path(path)
    try:
        if not file.exists():
            raise FieldError(str(path), f"file not found; accepted: {accepted}")
        if file.is_dir():
            raise FieldError(str(path), f"is a folder; accepted: {accepted}")
        size = file.stat().st_size
        if size > max_bytes:
            raise FieldError(
                str(path), f"{size / 2**20:.0f} MB is more than {max_bytes / 2**20:.0f} MB; accepted: {accepted}"
            )
        return file.read_bytes()
    except OSError as exc:
        raise FieldError(
            str(path), f"cannot read it ({exc.strerror or exc.__class__.__name__}); accepted: {accepted}"
        ) from None


__all__ = ["read_input_file"]
