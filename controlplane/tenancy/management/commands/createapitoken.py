"""`python manage.py createapitoken USER [--tenant SLUG --role ROLE]` — the token is the
last word of the output. With --tenant the user becomes a member with ROLE if not one."""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from controlplane.audit.services import Actor, record
from controlplane.tenancy.models import ApiToken, Membership, Tenant

ROLES = [r for r, _ in Membership.ROLES]


class Command(BaseCommand):
    help = "Issue an API token for USER (per tenant with --tenant) and print it once."

    def add_arguments(self, parser):
        parser.add_argument("user", help="username")
        parser.add_argument("--tenant", help="tenant slug: the token acts in this tenant only")
        parser.add_argument("--role", choices=ROLES, help="role of the token (default: the user's role, else viewer)")
        parser.add_argument("--name", default="", help="a label for the token")

    def handle(self, *args, user, tenant, role, name, **opts):
        account = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: user}).first()
        if account is None:
            raise CommandError(f"no user named {user!r}")
        if role and not tenant:
            raise CommandError("--role needs --tenant")
        with transaction.atomic():
            tenant_obj = self.membership(account, tenant, role) if tenant else None
            if tenant_obj is not None:
                role = role or Membership.objects.get(user=account, tenant=tenant_obj).role
            row, token = ApiToken.issue(account, tenant=tenant_obj, role=role or "", name=name)
            record(Actor.system(), "issue", row, after={"user": account.pk, "role": row.role},
                   note="manage.py createapitoken", tenant=tenant_obj)
        scope = f"tenant {tenant_obj.slug} as {row.role}" if tenant_obj else "the user's own permissions"
        self.stdout.write(f"API token {row.prefix}… for {user} ({scope}), shown only once:\n{token}")

    def membership(self, account, slug, role):
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"no tenant with slug {slug!r}")
        member, created = Membership.objects.get_or_create(
            user=account, tenant=tenant, defaults={"role": role or Membership.VIEWER})
        if created:
            record(Actor.system(), "member", member, after={"user": account.pk, "role": member.role},
                   note="manage.py createapitoken", tenant=tenant)
            self.stdout.write(f"{account} is now a member of {slug} as {member.role}.")
        return tenant
