import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import path  # noqa: E402

from controlplane.dashboard.consumers import LiveConsumer  # noqa: E402
from controlplane.publishing.consumers import DataPlaneConsumer  # noqa: E402

application = ProtocolTypeRouter({
    # Dashboard assets (static/) are served by the app itself: no CDN, no web server needed.
    "http": ASGIStaticFilesHandler(django_asgi_app),
    "websocket": URLRouter([
        path("ws/dataplane/", DataPlaneConsumer.as_asgi()),  # nodes: bearer token, no Origin
        # dashboard: session auth, so only pages of this site (Origin in ALLOWED_HOSTS) may open it
        path("ws/live/", AllowedHostsOriginValidator(AuthMiddlewareStack(LiveConsumer.as_asgi()))),
    ]),
})
