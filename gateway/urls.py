from __future__ import annotations

from django.urls import path

from gateway import views

urlpatterns = [
    path("ws/<slug:slug>", views.GatewayView.as_view(), name="gateway"),
]
