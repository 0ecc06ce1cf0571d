"""Accounts: sign up (throttled per client IP), log in (failures throttled per client IP, the dashboard's and
the admin's alike), log out, change password, reset it by email (throttled per client IP)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_user_model, login, update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm, PasswordResetForm
from django.contrib.auth.password_validation import validate_password
from django.contrib.auth.views import LoginView, PasswordResetView
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods
from django_ratelimit.core import get_usage

from aerostack.mail import send_mail
from aerostack.net import client_ip_key
from aerostack.views import ratelimited
from workspaces.selectors import invite_in_session
from workspaces.services import invite_refusal

User = get_user_model()


class SignupForm(forms.Form):
    email = forms.EmailField(
        max_length=150, widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True})
    )
    password1 = forms.CharField(
        label="Password", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"})
    )
    password2 = forms.CharField(
        label="Password again",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, *args: Any, invited_email: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.invited_email = invited_email

    def clean_email(self) -> str:
        email = str(self.cleaned_data["email"]).strip().lower()
        if self.invited_email is not None and email != self.invited_email:
            raise ValidationError(
                "Sign-up is by invitation only: use the address the invite was sent to, "
                f"{self.invited_email}."
            )
        if User.objects.filter(username__iexact=email).exists():
            raise ValidationError("An account with this email already exists. Log in instead.")
        return email

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        password1, password2 = cleaned.get("password1"), cleaned.get("password2")
        if password1 and password2 and password1 != password2:
            self.add_error("password2", "The two passwords differ.")
        elif password1 and "email" in cleaned:
            try:
                validate_password(password1, User(username=cleaned["email"], email=cleaned["email"]))
            except ValidationError as exc:
                self.add_error("password1", exc)
        return cleaned


class EmailAuthenticationForm(AuthenticationForm):
    username = forms.CharField(
        label="Email",
        max_length=150,
        widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "email"}),
    )

    def clean_username(self) -> str:
        return str(self.cleaned_data["username"]).strip().lower()


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Sign up. With ``SIGNUP_OPEN=false`` only the holder of a valid invite may, with the invited address."""
    invited_email = None
    if not settings.SIGNUP_OPEN:
        invite = invite_in_session(request.session)
        if invite is None or invite_refusal(invite=invite, user=None, now=timezone.now()) is not None:
            raise Http404("Sign-ups are closed")
        invited_email = invite.email
    # ``next`` continues a flow after sign-up (an invite); ``email`` pre-fills the address it was sent to.
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        next_url = ""
    if request.user.is_authenticated:
        return redirect(next_url or "workspace_list")
    form = SignupForm(
        request.POST or None,
        initial={"email": invited_email or request.GET.get("email", "")[:150]},
        invited_email=invited_email,
    )
    if request.method == "POST":
        # Every attempt counts, not only the accounts made: failed ones probe which emails have accounts.
        usage = _usage(request, group="signup", rate=settings.SIGNUP_RATE, increment=True)
        if usage is not None and usage["should_limit"]:
            minutes = max(1, -(-int(usage["time_left"]) // 60))
            form.errors.clear()  # what was typed stays; only the refusal is shown
            form.add_error(
                None,
                f"Too many sign-ups from your network. Try again in {minutes} minute{pluralize(minutes)}.",
            )
            context = {"form": form, "next": next_url}
            response = render(request, "accounts/signup.html", context, status=429)
            response["Retry-After"] = str(max(int(usage["time_left"]), 1))
            return response
    if request.method == "POST" and form.is_valid():
        email = form.cleaned_data["email"]
        user = User.objects.create_user(username=email, email=email, password=form.cleaned_data["password1"])
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        if next_url:
            messages.success(request, "Welcome to Aerostack.")
            return redirect(next_url)
        messages.success(request, "Welcome to Aerostack. Create your first workspace.")
        return redirect("workspace_list")
    context = {"form": form, "next": next_url}
    return render(request, "accounts/signup.html", context, status=400 if form.errors else 200)


def _usage(request: HttpRequest, *, group: str, rate: str, increment: bool) -> dict[str, Any] | None:
    return get_usage(  # type: ignore[no-any-return]
        request, group=group, key=client_ip_key, rate=rate, method="POST", increment=increment
    )


def login_blocked(request: HttpRequest) -> HttpResponse | None:
    """The 429 page when this client IP had ``LOGIN_RATE`` failed log-ins; None when it may try."""
    usage = _usage(request, group="login", rate=settings.LOGIN_RATE, increment=False)
    if usage is not None and usage["count"] >= usage["limit"]:
        return ratelimited(request, retry_after=int(usage["time_left"]))
    return None


def login_failed(request: HttpRequest) -> None:
    """Count a failed log-in of this client IP (one budget for the dashboard's and the admin's log-in)."""
    _usage(request, group="login", rate=settings.LOGIN_RATE, increment=True)


class ThrottledLoginView(LoginView):
    """Log-in with failed attempts counted per client IP (``LOGIN_RATE``, default 10 a minute).

    Only failures count, so a person who logs in successfully from a shared office IP is never blocked by it.
    """

    template_name = "accounts/login.html"
    authentication_form = EmailAuthenticationForm
    redirect_authenticated_user = True
    http_method_names = ["get", "post"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return login_blocked(request) or super().post(request, *args, **kwargs)

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        login_failed(self.request)
        response = super().form_invalid(form)
        response.status_code = 400
        return response


def admin_login(request: HttpRequest) -> HttpResponseBase:
    """``/admin/login/``, throttled exactly like the dashboard's log-in (the same per-IP failure budget).

    Django's admin log-in view is used as it is; a POST it answers with the form again (200) failed.
    """
    if request.method == "POST":
        blocked = login_blocked(request)
        if blocked is not None:
            return blocked
    response = admin.site.login(request)
    if request.method == "POST" and response.status_code == 200:
        login_failed(request)
        response.status_code = 400
    return response


@login_required
@require_http_methods(["GET", "POST"])
def password_change(request: HttpRequest) -> HttpResponse:
    form = PasswordChangeForm(request.user, request.POST or None)  # type: ignore[arg-type]
    if request.method == "POST" and form.is_valid():
        user = form.save()
        update_session_auth_hash(request, user)  # keep this session; other sessions of the user end
        messages.success(request, "Your password was changed.")
        return redirect("workspace_list")
    return render(
        request, "accounts/password_change.html", {"form": form}, status=400 if form.errors else 200
    )


class EmailPasswordResetForm(PasswordResetForm):
    """Django's reset form, sending our templated message (plain text and HTML) through aerostack.mail."""

    def send_mail(
        self,
        subject_template_name: str,
        email_template_name: str,
        context: dict[str, Any],
        from_email: str | None,
        to_email: str,
        html_email_template_name: str | None = None,
    ) -> None:
        context = {
            **context,
            "reset_url": context["protocol"]
            + "://"
            + context["domain"]
            + reverse("password_reset_confirm", kwargs={"uidb64": context["uid"], "token": context["token"]}),
        }
        send_mail(name="password_reset", to=to_email, context=context)


class ThrottledPasswordResetView(PasswordResetView):
    """Asking for a reset link: every POST sends an email (or pretends to, for an unknown address, so the
    page never tells who has an account), so every POST counts against ``PASSWORD_RESET_RATE`` per IP."""

    template_name = "accounts/password_reset_form.html"
    form_class = EmailPasswordResetForm
    http_method_names = ["get", "post"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        usage = get_usage(
            request,
            group="password_reset",
            key=client_ip_key,
            rate=settings.PASSWORD_RESET_RATE,
            method="POST",
            increment=True,
        )
        if usage is not None and usage["should_limit"]:
            return ratelimited(request, retry_after=int(usage["time_left"]))
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form: PasswordResetForm) -> HttpResponse:
        response = super().form_invalid(form)
        response.status_code = 400
        return response
