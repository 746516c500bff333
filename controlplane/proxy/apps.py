from django.apps import AppConfig


class ProxyConfig(AppConfig):
    name = "controlplane.proxy"
    label = "proxy"
