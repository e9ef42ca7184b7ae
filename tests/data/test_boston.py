"""The shipped Boston CSV: what `hpo validate` counts without parsing is what a trial reads."""

from __future__ import annotations

from hpo.data import boston


def test_shipped_row_count_is_what_read_frame_reads() -> None:
    # check() counts the shipped CSV's lines instead of importing pandas; that count must be the parsed one.
    assert boston._shipped_rows() == len(boston.read_frame()) > 400
