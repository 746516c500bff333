"""`python manage.py resetlogins [USERNAME] [--address ADDR]` — lift the login throttle."""
from django.core.management.base import BaseCommand

from controlplane.dashboard.models import LoginAttempt
from controlplane.dashboard.throttle import username_key


class Command(BaseCommand):
    help = "Forget failed sign-ins (all, one username's in any spelling, or one client address's)."

    def add_arguments(self, parser):
        parser.add_argument("username", nargs="?", help="only this username (NFKC, case-insensitive)")
        parser.add_argument("--address", help="only failures from this client address")

    def handle(self, *args, username=None, address=None, **opts):
        failures = LoginAttempt.objects.all()
        if username:
            failures = failures.filter(username=username_key(username))
        if address:
            failures = failures.filter(address=address)
        deleted, _ = failures.delete()
        self.stdout.write(f"Forgot {deleted} failed sign-in{'s' if deleted != 1 else ''}.")
