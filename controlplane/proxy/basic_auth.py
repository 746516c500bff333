"""Basic-auth users of an access list or a route: what a writer sends → what is stored.

Passwords are write-only: they are hashed here (``dataplane.basicauth.make_hash``,
PBKDF2-HMAC-SHA256 with a random salt) and never stored, returned or logged. Every UI
(API, dashboard, admin, config files) sends a list of users to the services:

* ``{"username", "password"}`` sets that user's password;
* ``{"username", "password_hash"}`` stores a hash as it is (config files and backups
  carry hashes; the snapshot schema checks the format);
* ``{"username"}`` keeps the stored hash of an existing user.

A user left out of the list is removed. A route's ``basic_auth`` is null (off) or
``{"realm", "users"}`` with the same users (``stored_route_auth``). The audit log and the dashboard's diffs show a
short fingerprint of each hash instead of the hash (``audit_view``).
"""
from __future__ import annotations

import hashlib

from django.core.exceptions import ValidationError

from dataplane import basicauth, schema

MAX_PASSWORD = 1024
MAX_NEW_PASSWORDS = 20  # hashes made per write: ~60 ms each, bounded per request


def stored_users(current, submitted, field: str = "users") -> list:
    """The ``users`` value to store for ``submitted`` over the ``current`` stored one.
    Raises ValidationError keyed ``field`` naming the entry."""
    if not isinstance(submitted, list):
        raise ValidationError({field: ['a list of {"username", "password"} objects']})
    if len(submitted) > schema.MAX_BASIC_AUTH_USERS:
        raise ValidationError({field: [f"at most {schema.MAX_BASIC_AUTH_USERS} users"]})
    known = {u.get("username"): u.get("password_hash") for u in current or [] if isinstance(u, dict)}
    problems, out, new = [], [], 0
    for i, item in enumerate(submitted):
        if not isinstance(item, dict) or not isinstance(item.get("username"), str):
            problems.append(f"users[{i}]: give a username")
            continue
        username = item["username"].strip()
        password, given_hash = item.get("password"), item.get("password_hash")
        if password not in (None, "") and given_hash:
            problems.append(f"{username}: give a password or a password_hash, not both")
        elif password not in (None, ""):
            if not isinstance(password, str) or len(password) > MAX_PASSWORD:
                problems.append(f"{username}: the password must be text of at most {MAX_PASSWORD} characters")
                continue
            new += 1
            out.append({"username": username, "password": password})  # hashed below, once all is valid
        elif given_hash:
            out.append({"username": username, "password_hash": given_hash})
        elif known.get(username):
            out.append({"username": username, "password_hash": known[username]})
        else:
            problems.append(f"{username}: a new user needs a password")
    if new > MAX_NEW_PASSWORDS:
        problems.append(f"set at most {MAX_NEW_PASSWORDS} passwords in one change")
    if problems:
        raise ValidationError({field: problems})
    return [{"username": e["username"], "password_hash": basicauth.make_hash(e["password"])}
            if "password" in e else e for e in out]


def stored_route_auth(current, submitted):
    """A route's ``basic_auth`` to store for ``submitted`` over the ``current`` stored one:
    None (off) or ``{"realm": text ("": the route's name), "users": [...]}``, the users as
    ``stored_users`` makes them (a user without a password keeps its hash). Raises
    ValidationError keyed ``basic_auth``; the realm's text is checked with the snapshot."""
    if submitted is None:
        return None
    if not isinstance(submitted, dict) or set(submitted) - {"realm", "users"}:
        raise ValidationError({"basic_auth": ['null, or {"realm", "users": [{"username", "password"}]}']})
    realm = submitted.get("realm") or ""
    if not isinstance(realm, str):
        raise ValidationError({"basic_auth": ["realm: must be text"]})
    known = current.get("users") if isinstance(current, dict) else None
    users = stored_users(known, submitted.get("users"), field="basic_auth")
    if not users:
        raise ValidationError({"basic_auth": ["give at least one user (or turn basic auth off)"]})
    return {"realm": realm.strip(), "users": users}


def route_auth_audit(value):
    """A route's ``basic_auth`` as the audit log and diffs show it (fingerprints)."""
    if isinstance(value, dict) and "users" in value:
        return {**value, "users": audit_view(value["users"])}
    return value


def fingerprint(password_hash) -> str:
    """What the audit log and diffs show of a hash: enough to see that it changed."""
    return "sha256:" + hashlib.sha256(str(password_hash).encode()).hexdigest()[:12]


def audit_view(users) -> list:
    if not isinstance(users, list):
        return users
    return [{"username": u.get("username"), "password": fingerprint(u.get("password_hash"))}
            if isinstance(u, dict) else u for u in users]


def usernames(users) -> list[str]:
    return [u.get("username") for u in users or [] if isinstance(u, dict)]
