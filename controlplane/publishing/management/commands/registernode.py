"""`python manage.py registernode NAME` — the token is the last word of the output."""
from django.core.management.base import BaseCommand, CommandError

from controlplane.audit.services import Actor, record
from controlplane.publishing.models import Node


class Command(BaseCommand):
    help = "Register a data-plane node and print its token (shown only this once)."

    def add_arguments(self, parser):
        parser.add_argument("name")

    def handle(self, *args, name, **opts):
        name = name.strip()
        if not name:
            raise CommandError("the node name may not be empty")
        if Node.objects.filter(name=name).exists():
            raise CommandError(f"a node named {name!r} already exists")
        node, token = Node.register(name)
        record(Actor.system(), "register", node, after={"name": name}, note="manage.py registernode")
        self.stdout.write(f"Registered node {name!r}. Start it with SWITCHYARD_NODE_TOKEN set to this token "
                          f"(shown only once):\n{token}")
