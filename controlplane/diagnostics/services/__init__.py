"""Diagnostics services, one module per diagnostic, used by the API views and the
dashboard: node and config status (``nodes``, ``config``), the live tail's filter
(``filters``), probes (``probing``), TLS (``tls``), the request inspector
(``inspector``) and why 502/504 with latency (``errors``).

Every function takes a ``Principal`` (``controlplane.tenancy.access``) and scopes with
it (``access``): platform staff see everything, a tenant member only its tenants'
routes, targets and certificates; anything else is ``Http404``. Nodes are platform
objects: their status is for staff; a tenant may still *use* a node (probe from it,
tail or capture on it) for its own routes, and see per-node error figures of its own
routes.
"""
from .access import Conflict, Forbidden, node_or_404, require_level, route_or_404, routes_for
from .config import config_check
from .errors import explained_errors, latency_verdict, node_errors, route_errors
from .filters import tail_filter
from .inspector import arm_capture, capture_session, route_captures, stop_capture, synthetic_request
from .nodes import node_status, nodes_status, pick_node
from .probing import prepare_probe, probe
from .tls import certificate_chain, chain_report, tls_check

__all__ = [
    "Conflict", "Forbidden", "arm_capture", "capture_session", "certificate_chain",
    "chain_report", "config_check", "explained_errors", "latency_verdict", "node_errors",
    "node_or_404", "node_status", "nodes_status", "pick_node", "prepare_probe", "probe",
    "require_level", "route_captures", "route_errors", "route_or_404", "routes_for",
    "stop_capture", "synthetic_request", "tail_filter", "tls_check",
]
