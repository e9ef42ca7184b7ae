"""Reports people would rather look at: an HTML page per study, and a written comparison of two."""

from hpo.report._compare import CompareResult, StudyFacts, compare_studies, gather_facts, setting_differences, verdict
from hpo.report._report import ReportResult, build_report

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
