"""Entries of changes that published no version (members, API tokens, alert channels,
nodes, no-op saves) were stamped with the newest version number, linking them to a
version someone else made. A version is published by exactly one change, audited
right after it by the version's author: that first entry keeps the number, the
others lose it."""
from django.db import migrations


def unstamp(apps, schema_editor):
    AuditEntry = apps.get_model("audit", "AuditEntry")
    ConfigVersion = apps.get_model("publishing", "ConfigVersion")
    authors = dict(ConfigVersion.objects.values_list("number", "author"))
    kept = {}
    for pk, number, actor in AuditEntry.objects.filter(config_version__isnull=False).order_by("id") \
            .values_list("id", "config_version", "actor"):
        if number not in kept and actor == authors.get(number):
            kept[number] = pk
    AuditEntry.objects.filter(config_version__isnull=False).exclude(id__in=list(kept.values())) \
        .update(config_version=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial"), ("publishing", "0001_initial")]
    operations = [migrations.RunPython(unstamp, migrations.RunPython.noop)]
