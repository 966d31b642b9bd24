"""Named sites (TransformerLens hook names) over an untouched Hugging Face model."""

from mechscope.sites.builders import attach, detach
from mechscope.sites.hooks import Calls, HookFn, HookPoint, Model
from mechscope.sites.table import Site, SiteSelector, select_sites, site_table, unknown_site_error

__all__ = [
    "Calls",
    "HookFn",
    "HookPoint",
    "Model",
    "Site",
    "SiteSelector",
    "attach",
    "detach",
    "select_sites",
    "site_table",
    "unknown_site_error",
]
