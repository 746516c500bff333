"""Is the stored configuration valid, as a node would judge it (``manage.py checkconfig``
as data)?"""
from __future__ import annotations

from controlplane.publishing import checks


def config_check(schema_only: bool = False) -> dict:
    """The problems, each naming its object, and whether this config is published."""
    return checks.check(schema_only=schema_only).as_dict()
