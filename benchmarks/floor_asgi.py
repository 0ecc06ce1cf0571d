"""The framework floor (benchmarks/floor_site.py) served the way Aerostack is: aerostack.serving's event-loop
front with one lane of reusable threads, under the worker class of gunicorn.conf.py. Not part of the product.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.floor_site")

from django.core.wsgi import get_wsgi_application

from aerostack.serving import Front, Headers, Lane


def _busy(body: bytes) -> tuple[int, Headers, bytes]:
    return 503, [(b"content-type", b"text/plain")], b"busy"


lane = Lane(name="floor", threads=256, max_body=1024 * 1024, busy=_busy)
application = Front(get_wsgi_application(), lambda path: lane, [lane], body_budget=256 * 1024 * 1024)
