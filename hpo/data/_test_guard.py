"""Counts reads of each test split, so tests can prove a study never touched it.

Two places count: `hpo evaluate` counts every call of an objective's ``test_split`` (whoever wrote the
objective), and hpo's own dataset readers count every read of their test rows (so a read from anywhere
else, a trial say, shows too). A read inside an evaluation's counted call is counted once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

TEST_SPLIT_READS: Counter[str] = Counter()
_COUNTED: ContextVar[str | None] = ContextVar("hpo_test_read_counted", default=None)


def record_test_read(dataset: str) -> None:
    """A dataset reader's count of one read of its test rows (not counted again inside `reading_test_split`)."""
    if _COUNTED.get() is None:
        TEST_SPLIT_READS[dataset] += 1


@contextmanager
def reading_test_split(name: str) -> Iterator[None]:
    """`hpo evaluate`'s one read of the test split of objective `name`: counted once, on entry."""
    TEST_SPLIT_READS[name] += 1
    token = _COUNTED.set(name)
    try:
        yield
    finally:
        _COUNTED.reset(token)
