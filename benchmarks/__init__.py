"""Measurements of Aerostack (``make bench``); not tests: they print figures and never fail on a miss."""
