"""Counts reads of each dataset's test split, so tests can prove a study never touched it."""

from __future__ import annotations

from collections import Counter

TEST_SPLIT_READS: Counter[str] = Counter()


def record_test_read(dataset: str) -> None:
    TEST_SPLIT_READS[dataset] += 1
