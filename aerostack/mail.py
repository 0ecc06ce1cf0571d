"""Sending email: every message has a plain-text and an HTML body, both rendered from templates.

``emails/<name>_subject.txt``, ``emails/<name>.txt`` and ``emails/<name>.html`` make one message. The plain
body is rendered with autoescaping off (``{% autoescape off %}`` in the template), the HTML body with it on,
so a workspace called ``<b>Ops</b>`` reads the same in both and injects markup in neither.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string


def render_mail(*, name: str, to: str, context: dict[str, Any]) -> EmailMultiAlternatives:
    # A header cannot span lines: a newline in a workspace name must not start a new header.
    subject = " ".join(render_to_string(f"emails/{name}_subject.txt", context).split())
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string(f"emails/{name}.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[to],
    )
    message.attach_alternative(render_to_string(f"emails/{name}.html", context), "text/html")
    return message


def send_mail(*, name: str, to: str, context: dict[str, Any]) -> None:
    """Render and send one message; raises what the backend raises (SMTP errors, timeouts)."""
    render_mail(name=name, to=to, context=context).send()
