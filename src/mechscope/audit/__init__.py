"""The interpretability audit: one self-contained HTML document (and its PDF) gathering what was
inspected in a model and what was found, for a reviewer.

``build_audit(model, out_dir, AuditConfig(...))`` runs the report's section builders per task
(circuits, head roles, lenses, SAE), probes, a feature database's explanations, the causal checks
behind each claim with their controls, anomaly screening with a fitted detector and compression
sensitivity, then writes ten sections: scope and identity, intended use, methods, findings,
validation, anomaly screening, compression, limitations (computed from the results), a NIST AI
RMF / EU AI Act Annex IV mapping with a completeness count, and a reproducibility manifest.
See docs/audit.md.
"""

from mechscope.audit.build import AuditFiles, build_audit, write_pdf
from mechscope.audit.config import FINDINGS, AuditConfig, AuditContext
from mechscope.audit.limits import SECTION_TITLES, compliance, limitations

__all__ = [
    "FINDINGS",
    "SECTION_TITLES",
    "AuditConfig",
    "AuditContext",
    "AuditFiles",
    "build_audit",
    "compliance",
    "limitations",
    "write_pdf",
]
