"""Reading and writing configuration files in tests."""
from __future__ import annotations

import yaml

from controlplane.acme.models import Account as AcmeAccount
from controlplane.alerts.models import AlertChannel
from controlplane.audit.models import AuditEntry
from controlplane.configio import apply as applying, document, export
from controlplane.proxy.models import AccessList, Certificate, Pool, Route
from controlplane.publishing.models import ConfigVersion
from controlplane.tenancy.models import Delegation, Tenant

from .conftest import PASSPHRASE, STAFF


def exported(tenant=None, fmt="yaml", passphrase=None) -> str:
    return document.dump(export.export(tenant, passphrase=passphrase), fmt)


def as_data(text: str) -> dict:
    return yaml.safe_load(text)


def as_text(data: dict) -> str:
    return document.dump(data)


def apply(text, principal=STAFF, **kwargs):
    kwargs.setdefault("passphrase", PASSPHRASE)
    return applying.apply(text, principal=principal, **kwargs)


def item(data: dict, section: str, name: str, tenant=None) -> dict:
    return next(i for i in data[section] if i["name"] == name and i.get("tenant") == tenant)


def empty_installation() -> None:
    """Delete every configuration row (as a fresh installation has none)."""
    for model in (Route, AccessList, Pool, Certificate, AlertChannel, AcmeAccount, Delegation, Tenant, ConfigVersion,
                  AuditEntry):
        model.objects.all().delete()


def state() -> tuple:
    """What a dry run must leave as it was."""
    return exported(), ConfigVersion.objects.count(), AuditEntry.objects.count()
