"""/api/v1/diagnostics/ — see views.py."""
from django.urls import path

from . import views

app_name = "diagnostics"
urlpatterns = [
    path("", views.IndexView.as_view(), name="index"),
    path("explanations/", views.ExplanationsView.as_view(), name="explanations"),
    path("nodes/", views.NodeListView.as_view(), name="nodes"),
    path("nodes/<str:node>/", views.NodeDetailView.as_view(), name="node"),
    path("nodes/<str:node>/errors/", views.NodeErrorsView.as_view(), name="node-errors"),
    path("config/", views.ConfigCheckView.as_view(), name="config"),
    path("probe/", views.ProbeView.as_view(), name="probe"),
    path("tls-check/", views.TLSCheckView.as_view(), name="tls-check"),
    path("tail/", views.TailView.as_view(), name="tail"),
    path("certificates/<str:pk>/chain/", views.CertificateChainView.as_view(), name="certificate-chain"),
    path("routes/<str:pk>/errors/", views.RouteErrorsView.as_view(), name="route-errors"),
    path("routes/<str:pk>/capture/", views.RouteCaptureView.as_view(), name="route-capture"),
    path("routes/<str:pk>/captures/", views.RouteCapturesView.as_view(), name="route-captures"),
    path("routes/<str:pk>/test-request/", views.TestRequestView.as_view(), name="test-request"),
    path("captures/<str:sid>/", views.CaptureView.as_view(), name="capture"),
]
