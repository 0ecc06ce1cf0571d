from __future__ import annotations

from django.urls import path

from workspaces import activity_views, settings_views, views

urlpatterns = [
    path("", views.workspace_list, name="workspace_list"),
    path("<slug:slug>/", views.workspace_detail, name="workspace_detail"),
    path("<slug:slug>/settings/", settings_views.workspace_settings, name="workspace_settings"),
    path("<slug:slug>/settings/transfer/", settings_views.ownership_transfer_view, name="ownership_transfer"),
    path("<slug:slug>/settings/delete/", settings_views.workspace_delete_view, name="workspace_delete"),
    path("<slug:slug>/activity/", activity_views.activity_log, name="activity_log"),
    path(
        "<slug:slug>/activity/export.csv",
        activity_views.activity_export,
        {"fmt": "csv"},
        name="activity_export_csv",
    ),
    path(
        "<slug:slug>/activity/export.jsonl",
        activity_views.activity_export,
        {"fmt": "jsonl"},
        name="activity_export_jsonl",
    ),
]
