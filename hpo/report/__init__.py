"""Reports people would rather look at: an HTML page per study, and a written comparison of two.

May import config, running and evaluation; only the CLI imports it.
"""

from hpo.report._compare import CompareResult, compare_studies
from hpo.report._differences import setting_differences
from hpo.report._facts import StudyFacts, gather_facts
from hpo.report._report import ReportResult, build_report
from hpo.report._verdict import verdict

__all__ = [
    "CompareResult",
    "ReportResult",
    "StudyFacts",
    "build_report",
    "compare_studies",
    "gather_facts",
    "setting_differences",
    "verdict",
]
