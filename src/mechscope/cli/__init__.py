"""The ``mechscope`` command line (click); see :mod:`mechscope.cli.main`."""
