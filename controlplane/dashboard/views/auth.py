"""Sign-in and sign-out."""
from __future__ import annotations

from django.contrib.auth import login as auth_login, logout as auth_logout
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from .. import forms, throttle
from .common import return_url


@sensitive_post_parameters("password")
@csrf_protect
@never_cache
@throttle.with_throttle_status
def login_view(request):
    next_url = return_url(request, request.POST.get("next") or request.GET.get("next"), "")
    if request.user.is_authenticated and request.method == "GET":
        return redirect(next_url or "dashboard:overview")
    form = forms.LoginForm(request, data=request.POST or None)
    if request.method == "POST" and form.is_valid():
        auth_login(request, form.get_user())
        return redirect(next_url or "dashboard:overview")
    return render(request, "dashboard/login.html", {"form": form, "next": next_url})


@require_POST
def logout_view(request):
    auth_logout(request)
    return redirect("dashboard:login")
