"""Switchyard benchmark harness. Run it with ``make bench`` or ``python -m bench``."""
