"""The HTML report: a model card, next-token predictions and a logit lens, in one offline file.

``build_report(model, out_dir)`` runs every section registered in :data:`SECTIONS`.
"""

from __future__ import annotations

from mechscope.report.build import build_report
from mechscope.report.context import DEFAULT_PROMPTS, ReportConfig, ReportContext, Section
from mechscope.report.sections import SECTIONS

__all__ = [
    "DEFAULT_PROMPTS",
    "SECTIONS",
    "ReportConfig",
    "ReportContext",
    "Section",
    "build_report",
]
