"""The basic-auth users of the access-list form and the route form (a route's own
``basic_auth``): one row per user (username, a new
password, remove) and a few empty rows to add users.

Passwords are write-only: a typed password is hashed when the form is checked
(``dataplane.basicauth.make_hash``) and the page carries on only that hash, in a hidden
field, so that "Preview" and "Confirm and publish" store the same hash (the preview's
digest then matches) and no password is ever rendered back into the page.
"""
from __future__ import annotations

from django import forms

from controlplane.proxy import basic_auth
from dataplane import basicauth, schema

BLANK_ROWS = 2


class UserRowsMixin:
    """For a ServiceForm: ``user_rows`` (rows of bound fields) and ``users_value()``."""

    def setup_user_rows(self, instance, users=None) -> None:
        """Rows for the stored ``users`` (default: ``instance.users``, an access list's)."""
        if users is None:
            users = instance.users if instance is not None else []
        stored = [u.get("username", "") for u in users or [] if isinstance(u, dict)]
        posted = 0
        if self.is_bound:
            while f"users-{posted}-username" in self.data and posted < schema.MAX_BASIC_AUTH_USERS + BLANK_ROWS:
                posted += 1
        count = max(posted, len(stored) + BLANK_ROWS)
        self.user_row_count = count
        for i in range(count):
            known = i < len(stored)
            self.fields[f"users-{i}-username"] = forms.CharField(
                required=False, max_length=64, label="Username", initial=stored[i] if known else "",
                widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false",
                                             "aria-label": f"Username, user {i + 1}"}))
            self.fields[f"users-{i}-password"] = forms.CharField(
                required=False, max_length=1024, strip=False,
                label="New password" if known else "Password",
                widget=forms.PasswordInput(attrs={"autocomplete": "new-password",
                                                  "aria-label": f"Password, user {i + 1}"}, render_value=False))
            self.fields[f"users-{i}-hash"] = forms.CharField(required=False, max_length=300,
                                                             widget=forms.HiddenInput)
            self.fields[f"users-{i}-remove"] = forms.BooleanField(required=False, label="Remove")
        self.stored_usernames = stored

    @property
    def user_rows(self) -> list[dict]:
        rows = []
        for i in range(self.user_row_count):
            rows.append({"index": i, "known": i < len(self.stored_usernames),
                         "username": self[f"users-{i}-username"], "password": self[f"users-{i}-password"],
                         "hash": self[f"users-{i}-hash"], "remove": self[f"users-{i}-remove"],
                         "pending": bool(self.is_bound and self.data.get(f"users-{i}-hash"))})
        return rows

    def clean_user_rows(self) -> None:
        """Hash typed passwords once; the page keeps the hash (hidden), never the password."""
        data = self.cleaned_data
        typed = [i for i in range(self.user_row_count) if data.get(f"users-{i}-password")]
        if len(typed) > basic_auth.MAX_NEW_PASSWORDS:  # each hash costs ~60 ms of this request
            self.add_error(None, f"Set at most {basic_auth.MAX_NEW_PASSWORDS} passwords in one change.")
            return
        updates = {}
        for i in range(self.user_row_count):
            password = data.get(f"users-{i}-password") or ""
            if password and (data.get(f"users-{i}-username") or "").strip():
                digest = basicauth.make_hash(password)
                data[f"users-{i}-hash"] = digest
                updates[f"users-{i}-hash"] = digest
                updates[f"users-{i}-password"] = ""
        if updates:
            self.data = self.data.copy()
            for key, value in updates.items():
                self.data[key] = value

    def users_value(self) -> list[dict]:
        """What the service gets: {username} keeps a stored hash, {username, password_hash}
        sets one; a removed or empty row is left out (the user is removed)."""
        data = self.cleaned_data
        users = []
        for i in range(self.user_row_count):
            username = (data.get(f"users-{i}-username") or "").strip()
            if not username or data.get(f"users-{i}-remove"):
                continue
            digest = data.get(f"users-{i}-hash") or ""
            users.append({"username": username, "password_hash": digest} if digest else {"username": username})
        return users
