from __future__ import annotations

from django.urls import path

from analytics import views

urlpatterns = [
    path("", views.analytics_tab, name="analytics"),
    path("calls.csv", views.analytics_export, name="analytics_export_csv"),
]
