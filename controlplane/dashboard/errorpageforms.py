"""The error pages form: one HTML text area per status, checked as the nodes check it."""
from __future__ import annotations

from django import forms

from dataplane.errorpages import check_page, reason_of

from .forms import ServiceForm

# When the proxy answers with each status itself (what the page is for).
USED_FOR = {
    403: "an access list refuses the client, or a WebSocket upgrade on a route without WebSocket",
    404: "no route matches the request (every host: this page is the platform's alone)",
    429: "a rate limit refuses the request",
    502: "the upstream refused, reset or broke the connection, or its TLS or response was invalid",
    503: "no healthy target, the forward-auth service could not be asked, or the route is in maintenance",
    504: "the upstream did not connect or answer in time",
}


class ErrorPagesForm(ServiceForm):
    """``statuses``: the pages the owner may set (a route has no 404 page)."""

    def __init__(self, *args, statuses, pages: dict[int, str], instance=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.statuses = tuple(statuses)
        for status in self.statuses:
            self.fields[f"page_{status}"] = forms.CharField(
                required=False, strip=False, initial=pages.get(status, ""),
                label=f"{status} {reason_of(status)}", help_text=f"Answers when {USED_FOR[status]}.",
                widget=forms.Textarea(attrs={"rows": 8, "class": "mono", "spellcheck": "false",
                                             "placeholder": "Empty: the default page"}))
        self.fields["note"] = self.fields.pop("note")
        self.instance = instance
        self.expect_version(instance)

    def clean(self):
        data = super().clean()
        for status in self.statuses:
            body = data.get(f"page_{status}") or ""
            if body.strip():
                for problem in check_page(status, body):
                    self.add_error(f"page_{status}", problem)
        return data

    def pages(self) -> dict[int, str]:
        """{status: HTML} of every status (an empty one: no page)."""
        return {s: self.cleaned_data.get(f"page_{s}") or "" for s in self.statuses}

    def service_fields(self) -> dict:
        """The route field (statuses with a page only)."""
        return {"error_pages": {str(s): body for s, body in self.pages().items() if body.strip()}}

    def status_fields(self):
        return [(s, self[f"page_{s}"]) for s in self.statuses]
