"""Errors that mechscope raises for bad input.

Every error names the problem and the fix in one line; the CLI prints it and exits with code 2.
"""

from __future__ import annotations


class MechscopeError(ValueError):
    """Bad input: the message says what is wrong and how to fix it."""


class NotAvailable(MechscopeError):
    """The model's family lacks what was asked for (a site, an analysis); the message says why."""


class FolderInUseError(MechscopeError):
    """Another run holds the lock on the output folder (see :func:`mechscope.files.folder_lock`)."""
