"""What each ``proxy_status`` the data plane logs usually means, and what to check next.

Keys are the values of the access log's ``proxy_status`` and ``reason`` and of the
traffic reports (``dataplane.errors`` keys and types, plus the codes of aborted
responses and closed tunnels). ``tests/diagnostics`` checks
that every code the data plane can emit is explained here.
"""
from __future__ import annotations

EXPLANATIONS: dict[str, dict[str, str]] = {
    "connection_refused": {
        "meaning": "Nothing is listening at the target address: the backend process is down, "
                   "listens on another port or only on another interface.",
        "check": "Probe the target from the node: a TCP 'connection refused' confirms it. Check "
                 "the target's host and port in the pool, and that the backend runs and listens "
                 "on an address the node can reach (not only 127.0.0.1 on another host).",
    },
    "connection_timeout": {
        "meaning": "The TCP connection to the target did not complete within the pool's "
                   "connect_timeout: a firewall drops the packets, the host is down, or the "
                   "address is wrong.",
        "check": "Probe the target from the node and look at the TCP step; check security "
                 "groups/firewalls between the node and the backend and the pool's "
                 "connect_timeout.",
    },
    "dns_error": {
        "meaning": "The target's host name did not resolve on the node (NXDOMAIN, SERVFAIL or "
                   "timeout).",
        "check": "Probe the target from the node: the DNS step shows the resolver's answer. "
                 "Check the name for typos and the node's resolver configuration.",
    },
    "destination_ip_prohibited": {
        "meaning": "The target resolved only to addresses the tenant's upstream policy forbids "
                   "(loopback, private, link-local ...): the node refused to connect.",
        "check": "Probe the target: the policy step lists the refused addresses. Point the "
                 "target at an allowed address or ask the platform to allow that network for "
                 "the tenant. A name that recently started resolving to a private address may "
                 "be DNS rebinding.",
    },
    "destination_ip_unroutable": {
        "meaning": "The node could not reach the target's address (no route to host, network "
                   "unreachable, connection reset while connecting).",
        "check": "Probe the target from the node and read the TCP error; check routing between "
                 "the node and the backend.",
    },
    "connection_terminated": {
        "meaning": "The backend accepted the connection but closed it before sending a "
                   "response (crash, restart, or a keep-alive timeout shorter than the proxy's).",
        "check": "Look at the backend's logs at the time of the errors; if it happens on reused "
                 "connections, make the backend's keep-alive timeout longer than 20 s.",
    },
    "http_protocol_error": {
        "meaning": "The backend answered with something that is not valid HTTP/1.1 (a TLS "
                   "server spoken to in plain HTTP, a broken response, an unexpected 101).",
        "check": "Probe the URL from the node and compare the HTTP step; check whether the "
                 "backend expects TLS (enable upstream TLS on the pool) or another protocol.",
    },
    "http_response_timeout": {
        "meaning": "The backend accepted the request but sent no response headers within the "
                   "pool's read_timeout: the backend is slow or hung.",
        "check": "Compare upstream latency with the total latency below: if the upstream p95 is "
                 "close to the read timeout, the backend is slow — look at it before raising "
                 "the timeout. Probe the target to see its time to first byte.",
    },
    "http_response_incomplete": {
        "meaning": "The backend started a response but the connection ended before it was "
                   "complete; the client connection was aborted so that no truncated response "
                   "looks complete.",
        "check": "Look for backend crashes or restarts, proxies or load balancers between node "
                 "and backend that cut long responses, and the backend's write timeouts.",
    },
    "connection_read_timeout": {
        "meaning": "A WebSocket tunnel carried no data in either direction for the idle "
                   "timeout, so the proxy closed both connections.",
        "check": "Have the application send pings (or any message) more often than the idle "
                 "timeout on long-lived quiet connections, and reconnect when closed.",
    },
    "destination_unavailable": {
        "meaning": "No target of the pool could take the request: every target is marked "
                   "unhealthy by the active checks, ejected by passive health, disabled or "
                   "draining.",
        "check": "Look at the pool's targets and their health history; probe a target to see "
                 "why its health check fails.",
    },
    "destination_not_found": {
        "meaning": "No route matches the request's host and path (the proxy answered 404 "
                   "itself).",
        "check": "Tail the log filtered by host to see the exact Host and path received; check "
                 "the route's hosts (exact vs *. wildcard), path and path_type, methods and "
                 "header matches.",
    },
    "proxy_loop_detected": {
        "meaning": "The request already carried this proxy's Via entry: a route points back at "
                   "the proxy itself.",
        "check": "Check the pool's targets: one of them is a Switchyard listener.",
    },
    "tls_protocol_error": {
        "meaning": "The TLS handshake with the backend failed (no common protocol or cipher, "
                   "the backend is not a TLS server, or it closed the connection).",
        "check": "Probe the https:// URL from the node and read the TLS step; check that the "
                 "backend speaks TLS 1.2+ on that port, or disable upstream TLS on the pool.",
    },
    "tls_certificate_error": {
        "meaning": "The backend's certificate did not verify: unknown CA, expired, or its "
                   "names do not cover the SNI/host the pool uses.",
        "check": "Probe the target: the TLS step gives the verification error and the presented "
                 "chain. Set the pool's CA bundle or SNI name, or fix the backend's chain.",
    },
    "http_request_error": {
        "meaning": "The client's request was refused or cut: malformed, too large, or the "
                   "client stopped sending its body (4xx, never reached a backend).",
        "check": "Tail the log filtered by client address to see the requests; check the "
                 "route's max_body_size and the client.",
    },
    "bad_request": {
        "meaning": "The request was malformed (conflicting Content-Length, bad chunking, "
                   "missing Host ...): answered 400 and closed; nothing reached a backend.",
        "check": "Tail the log by client address; fix the client or whatever sits in front "
                 "of the proxy.",
    },
    "invalid_host": {
        "meaning": "The Host header was missing, repeated or not a host name (userinfo, a "
                   "path, a list, empty): answered 400; nothing reached a backend.",
        "check": "Tail the log by client address: the host field shows the value received.",
    },
    "method_not_implemented": {
        "meaning": "The request method is a token the proxy's HTTP parser does not know "
                   "(501); nothing reached a backend.",
        "check": "Use a standard method (GET, POST, PUT, PATCH, DELETE, WebDAV methods, "
                 "PURGE, QUERY ...) or call the backend directly.",
    },
    "body_too_large": {
        "meaning": "The request body exceeded the route's max_body_size (413).",
        "check": "Raise max_body_size on the route if such uploads are expected.",
    },
    "headers_too_large": {
        "meaning": "The request headers exceeded the limits (8 KiB per header, 32 KiB in all, "
                   "100 headers): 431.",
        "check": "Look for oversized cookies or tokens sent by the client.",
    },
    "uri_too_long": {
        "meaning": "The request line exceeded 8 KiB (414).",
        "check": "Look for clients putting large data into query strings.",
    },
    "misdirected_request": {
        "meaning": "The request's Host belongs to another tenant's certificate than the one "
                   "the TLS handshake selected by SNI (421).",
        "check": "Check that the client sends the same name in SNI and Host (connection reuse "
                 "across host names by a browser or HTTP/2 front end).",
    },
    "websocket_denied": {
        "meaning": "The client asked for a WebSocket upgrade on a route that does not allow "
                   "WebSocket (403, Proxy-Status http_request_denied).",
        "check": "Turn on the route's 'websocket' option if the route serves WebSocket.",
    },
    "http_request_denied": {
        "meaning": "The proxy refused the request by policy (403): the route's access list refused "
                   "the client address (Proxy-Status details \"access list <name>\"), a rate limit was "
                   "exceeded (429, details \"rate limit\"), basic auth asked for a password (401, details "
                   "\"basic auth <name>\"; 429 after repeated failures), or a WebSocket "
                   "upgrade on a route without WebSocket.",
        "check": "Tail the log with this Proxy-Status: each line's reason names the policy (the access "
                 "list). Check the client address the node saw, and trusted_proxies when clients come "
                 "through a load balancer (its X-Forwarded-For counts only from a trusted proxy).",
    },
    "access_denied": {
        "meaning": "The route's access list refused the client address (403, Proxy-Status "
                   "http_request_denied, details \"access list <name>\").",
        "check": "Compare the client address in the tail with the list's rules (the first match wins, "
                 "then its default); behind a load balancer, check the node's trusted_proxies.",
    },
    "rate_limited": {
        "meaning": "The route's rate limit, or its tenant's, was exceeded: the node answered 429 with "
                   "Retry-After (Proxy-Status http_request_denied, details \"rate limit\") without touching "
                   "the pool. A limit holds across all nodes together.",
        "check": "Tail the log with status 429: the reason says \"rate limit\" and the client address "
                 "shows who is limited. Raise the rate or the burst on the route (or the tenant), or key the "
                 "limit per client address or per API key header so one client cannot use it all. If the "
                 "node page says \"rate limit fallback\", Redis is unreachable and each node admits only "
                 "its even share.",
    },
    "basic_auth_required": {
        "meaning": "The route (field basic_auth) or its access list has basic-auth users and the request gave "
                   "no valid username and password (401 with WWW-Authenticate, Proxy-Status "
                   "http_request_denied, details \"basic auth <realm or list name>\").",
        "check": "A browser asks the user and retries; an API client must send Authorization: Basic. Check the "
                 "list's users; a password can only be set again, never read.",
    },
    "basic_auth_throttled": {
        "meaning": "Too many failed basic-auth attempts from one client address (5 in a minute): 429 with "
                   "Retry-After, answered without checking the password.",
        "check": "Look for a client retrying a wrong password (a stale saved password, a script) in the tail.",
    },
    "maintenance": {
        "meaning": "The route is in maintenance mode: the node answers 503 with Retry-After and never "
                   "contacts the pool (Proxy-Status destination_unavailable, details \"maintenance\").",
        "check": "Switch maintenance off on the route when the work is done.",
    },
    "forward_auth_denied": {
        "meaning": "The route's forward auth service answered something other than 2xx (a 302 to its "
                   "login page, 401, 403): the node returned that answer to the client as it was and "
                   "forwarded nothing.",
        "check": "Normal for a client without a session. If signed-in users get it too, look at the auth "
                 "service's log and whether its session cookie is sent for this host (cookie domain).",
    },
    **{f"forward_auth_{etype}": {
        "meaning": f"The route's forward auth service could not be asked ({what}): the node answered 503 "
                   f"(Proxy-Status {etype}, details \"forward auth\") and forwarded nothing.",
        "check": "Check that the auth service runs and is reachable from the nodes at the route's forward "
                 "auth URL (a tenant's URL also obeys its upstream policy), and its timeout.",
    } for etype, what in (
        ("connection_refused", "nothing listens at its address"),
        ("connection_timeout", "no connection within the route's forward auth timeout"),
        ("http_response_timeout", "no answer within the route's forward auth timeout"),
        ("dns_error", "its host name did not resolve"),
        ("destination_ip_prohibited", "its address is not allowed by the owner's upstream policy"),
        ("destination_ip_unroutable", "its address is unreachable"),
        ("connection_terminated", "it closed the connection before answering"),
        ("http_protocol_error", "its answer was not valid HTTP/1.1"),
        ("tls_protocol_error", "the TLS handshake failed"),
        ("tls_certificate_error", "its TLS certificate did not verify"))},
    "proxy_internal_error": {
        "meaning": "An internal error in the proxy (a bug).",
        "check": "Look at the node's log output around the time of the error and report it.",
    },
}

UNKNOWN = {"meaning": "An error type this version of the control plane has no notes for.",
           "check": "Tail the log filtered by this Proxy-Status type and look at the node's logs."}


def explain(code: str) -> dict[str, str]:
    return EXPLANATIONS.get(code, UNKNOWN)
