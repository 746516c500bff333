"""Switchyard benchmark harness (SPEC 10). Run it with ``make bench`` or ``python -m bench``."""
