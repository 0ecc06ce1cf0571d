from __future__ import annotations

import sys
from pathlib import Path

# upstreams.py is imported both as tests.e2e.upstreams and (by the smoke tests) as a top-level module.
sys.path.insert(0, str(Path(__file__).resolve().parent))
