"""The API tests' world (tenants alpha and beta, users for every role, tokens) and a
real SMTP server (aiosmtpd) that Django's SMTP backend sends to."""
from tests.alerts.servers import smtp_server  # noqa: F401
from tests.api.conftest import encryption_key, staff_api, world  # noqa: F401
