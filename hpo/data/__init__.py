"""Datasets and their splits. The test split has its own reader so that every read of it is counted:
studies never call it; only `hpo evaluate` does (tests assert on :data:`TEST_SPLIT_READS`).

May import config and the objectives' data declarations; used by the objectives, evaluation and `hpo data`.
"""

from hpo.data._test_guard import TEST_SPLIT_READS, reading_test_split, record_test_read

__all__ = ["TEST_SPLIT_READS", "reading_test_split", "record_test_read"]
