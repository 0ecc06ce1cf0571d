"""One meaning per column in the usage log: ``tool`` is the upstream's own tool name, always, and
``exposed_name`` the name the client called.

Until now a routed call recorded the upstream's name in ``tool`` (with ``server`` set), while a call refused
before routing recorded the name the client sent (``<server>__<tool>``, or an unknown name, with no
``server``). So:

- rows without a server whose ``tool`` starts with ``<server_slug>__``: exposed_name = tool, tool = the rest;
- rows without a server slug (an unknown tool name): exposed_name = tool, tool = "";
- every other row with a tool (routed calls, and routed calls of servers deleted since): exposed_name =
  ``<server_slug>__<tool>``.

Rows of other methods (no tool) keep exposed_name "". Three UPDATE statements, no row loaded in Python.
"""

from django.db import migrations
from django.db.models import F, Value
from django.db.models.functions import Concat, Left, Length, Substr


def forward(apps, schema_editor):
    usage = apps.get_model("gateway", "UsageEvent")
    rows = usage.objects.using(schema_editor.connection.alias)
    rows.filter(server_id__isnull=True, tool__startswith=Concat(F("server_slug"), Value("__"))).exclude(
        server_slug=""
    ).update(exposed_name=F("tool"), tool=Substr("tool", Length("server_slug") + 3))
    rows.filter(server_slug="", exposed_name="").exclude(tool="").update(exposed_name=F("tool"), tool="")
    rows.filter(exposed_name="").exclude(tool="").update(
        exposed_name=Left(Concat(F("server_slug"), Value("__"), F("tool")), 200)
    )


def backward(apps, schema_editor):
    # Back to the old mixed meaning: refused calls (no server) recorded the name the client sent.
    usage = apps.get_model("gateway", "UsageEvent")
    rows = usage.objects.using(schema_editor.connection.alias)
    rows.filter(server_id__isnull=True).exclude(exposed_name="").update(tool=F("exposed_name"))


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0002_usage_columns"),
    ]

    operations = [migrations.RunPython(forward, backward, elidable=False)]
