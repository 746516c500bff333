from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "controlplane.accounts"
    label = "accounts"

    def ready(self):
        from . import sso  # noqa: F401 - registers the SWITCHYARD_OIDC_* system check
        # The provider comes from SWITCHYARD_OIDC_* and tokens are not stored: the admin
        # shows no "social applications" or "tokens" that would do nothing (the links,
        # "social accounts", stay visible; deleting one unlinks an identity).
        from allauth.socialaccount.models import SocialApp, SocialToken
        from django.contrib import admin
        for model in (SocialApp, SocialToken):
            if admin.site.is_registered(model):
                admin.site.unregister(model)
