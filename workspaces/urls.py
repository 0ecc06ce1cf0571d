from __future__ import annotations

from django.urls import path

from workspaces import views

urlpatterns = [
    path("", views.workspace_list, name="workspace_list"),
    path("<slug:slug>/", views.workspace_detail, name="workspace_detail"),
]
