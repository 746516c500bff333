"""Forms of the users, invitation and password pages (``views.accounts``)."""
from __future__ import annotations

from django import forms as djforms

from controlplane.tenancy.models import Membership


class UserForm(djforms.Form):
    username = djforms.CharField(max_length=150)
    email = djforms.EmailField(required=False, help_text="Needed for password reset links.")
    password = djforms.CharField(required=False, widget=djforms.PasswordInput(render_value=False),
                                 help_text="Leave empty and send a password reset link instead.")
    is_staff = djforms.BooleanField(required=False, label="platform staff")


class UserEditForm(djforms.Form):
    email = djforms.EmailField(required=False)
    is_staff = djforms.BooleanField(required=False, label="platform staff")


class InviteForm(djforms.Form):
    email = djforms.EmailField(max_length=254)
    role = djforms.ChoiceField(choices=Membership.ROLES, initial=Membership.VIEWER)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "invite-%s")  # the tenant page has other forms with a "role"
        super().__init__(*args, **kwargs)


class AcceptForm(djforms.Form):
    username = djforms.CharField(max_length=150)
    password = djforms.CharField(widget=djforms.PasswordInput)
    password2 = djforms.CharField(widget=djforms.PasswordInput, label="Password again")

    def clean(self):
        data = super().clean()
        if data.get("password") and data.get("password") != data.get("password2"):
            self.add_error("password2", "the two passwords differ")
        return data
