"""Named sites (TransformerLens hook names) over an untouched Hugging Face model."""

from mechscope.sites.builders import attach, detach
from mechscope.sites.hooks import Calls, HookFn, HookPoint, Model
from mechscope.sites.readout import final_logits, logit_head
from mechscope.sites.table import (
    Site,
    SiteSelector,
    SiteTable,
    select_sites,
    site_table,
    unknown_site_error,
)

__all__ = [
    "Calls",
    "HookFn",
    "HookPoint",
    "Model",
    "Site",
    "SiteSelector",
    "SiteTable",
    "attach",
    "detach",
    "final_logits",
    "logit_head",
    "select_sites",
    "site_table",
    "unknown_site_error",
]
