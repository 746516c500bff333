"""Run the test OpenID Connect provider: ``python -m tests.accounts.oidc_provider.serve
SPEC.json``. The spec: {"dir", "port", "client_id", "client_secret", "redirect_uri",
"users": [{"username", "password", "email", "groups": [...], "verified": true}]}.
Creates a fresh SQLite database and RSA key, the client and the users, then serves
(threaded WSGI) on 127.0.0.1:port until killed."""
import json
import os
import sys


def main(spec_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    os.environ["OIDC_PROVIDER_KEY"] = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    os.environ["OIDC_PROVIDER_DIR"] = spec["dir"]
    os.environ["OIDC_PROVIDER_ISSUER"] = f"http://127.0.0.1:{spec['port']}/o"
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.accounts.oidc_provider.settings"
    import django
    django.setup()
    from django.core.management import call_command
    call_command("migrate", verbosity=0, interactive=False)
    from django.contrib.auth.models import Group, User
    from oauth2_provider.models import Application
    for u in spec["users"]:
        user = User.objects.create_user(u["username"], u["email"], u["password"],
                                        first_name="" if u.get("verified", True) else "unverified")
        for name in u.get("groups", []):
            user.groups.add(Group.objects.get_or_create(name=name)[0])
    Application.objects.create(
        name="switchyard", client_id=spec["client_id"], client_secret=spec["client_secret"],
        client_type=Application.CLIENT_CONFIDENTIAL, authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=spec["redirect_uri"], algorithm=Application.RS256_ALGORITHM, skip_authorization=True)
    from django.core.servers.basehttp import run
    from django.core.wsgi import get_wsgi_application
    print("serving", flush=True)
    run("127.0.0.1", int(spec["port"]), get_wsgi_application(), threading=True)


if __name__ == "__main__":
    main(sys.argv[1])
