"""gunicorn settings for Aerostack. gunicorn reads this file from the folder it starts in, so ``make run``,
the live servers of the tests and ``gunicorn aerostack.wsgi:application`` run by hand in a deployment all
get it; options given on the command line win over it.
"""

# gthread plus a keep-alive fast path: a pool thread serves a connection's back-to-back requests itself
# instead of handing each one through the main thread's poller (see aerostack/worker.py).
worker_class = "aerostack.worker.ThreadWorker"

# Invite and password-reset links carry a secret in their path: the access log writes it as [redacted].
logger_class = "aerostack.access_log.RedactingLogger"
