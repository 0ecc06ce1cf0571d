"""gunicorn settings for Aerostack. gunicorn reads this file from the folder it starts in, so ``make run``,
the live servers of the tests and ``gunicorn aerostack.asgi:application`` run by hand in a deployment all
get it; options given on the command line win over it.
"""

# An event loop per process for the connections, bounded thread lanes for the Django code
# (aerostack/worker.py, aerostack/serving.py, docs/architecture.md).
worker_class = "aerostack.worker.Worker"
# Open connections (idle, streaming or in flight) one process holds; beyond it new requests get 503.
worker_connections = 4096
# Idle keep-alive connections cost no thread any more: keep them long enough that MCP clients, which send a
# request every few seconds, rarely reconnect (and longer than a typical proxy's upstream keep-alive).
keepalive = 30
# gunicorn >= 25.1 opens a control socket at one fixed path in $HOME: two instances on one machine (two
# nodes, a test server beside `make run`) would take it from each other. Aerostack does not use it.
control_socket_disable = True

# Invite and password-reset links carry a secret in their path: gunicorn's own access log writes it as
# [redacted] (and aerostack.worker.Worker puts the same filter on uvicorn's access log, which it uses).
logger_class = "aerostack.access_log.RedactingLogger"
