# Aerostack: `make run` serves the product, `make test` runs the whole suite. Both work from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
HOST ?= 127.0.0.1
# One process: the embedded setup (SQLite + in-process cache) must stay in one process. Its event loop holds
# the connections, bounded thread lanes run Django (SERVER_GATEWAY_THREADS, SERVER_DASHBOARD_THREADS).
# The worker class and other gunicorn settings are in gunicorn.conf.py.
WORKERS ?= 1

.PHONY: run test lint typecheck check bench bench-compare stress lock clean install install-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,dev]'
	touch $(VENV)/.installed $@

# The load suite's driver (locust, the [load] extra): only `make stress` needs it.
$(VENV)/.installed-load: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,dev,load]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-load: $(VENV)/.installed-load

# A laptop's upstream MCP servers usually listen on 127.0.0.1: `make run` allows private upstreams, but only
# when it listens on a loopback address. With HOST=0.0.0.0 anyone who can sign up could make the server
# reach internal addresses, so it stays off there unless ALLOW_PRIVATE_UPSTREAMS is set explicitly.
# Deployments run gunicorn themselves (README, "Production").
LOOPBACK_HOSTS := 127.0.0.1 ::1 [::1] localhost
# An IPv6 address is bound as [::1]:PORT.
BIND = $(if $(findstring :,$(HOST)),$(if $(findstring [,$(HOST)),$(HOST),[$(HOST)]),$(HOST)):$(PORT)
run: export ALLOW_PRIVATE_UPSTREAMS ?= $(if $(filter $(LOOPBACK_HOSTS),$(HOST)),true,false)
run: install
	$(BIN)/python manage.py migrate --noinput
	@echo "Aerostack on http://$(BIND)/ (private upstreams allowed: $$ALLOW_PRIVATE_UPSTREAMS)"
	$(BIN)/gunicorn aerostack.asgi:application --bind $(BIND) --workers $(WORKERS) --access-logfile -

# The end-to-end upstream (server-everything) comes from npm when node is there; without node those tests
# skip and say why (and fail in CI).
test: install-test
	@if command -v npm >/dev/null 2>&1; then $(BIN)/python -c "from tests.e2e.upstreams import ensure_node_modules as e; e()"; fi
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-test
	$(BIN)/mypy .

# What CI runs (.ci/run: this, then `make test` again on PostgreSQL + Redis): lint, types, the whole fast suite.
check: lint typecheck test

# BENCH_ARGS="--baseline-root /tmp/old-checkout" also measures an earlier commit in the same run.
# The Analytics tab at scale (benchmarks/analytics.py): 1,000,000 usage rows on SQLite, then on PostgreSQL
# (a scratch database next to ANALYTICS_BENCH_PG, dropped after). ANALYTICS_BENCH_ARGS="--rows 100000" etc.
ANALYTICS_BENCH_PG ?= postgres://root@127.0.0.1:5432/postgres
bench: install-test
	$(BIN)/python -m benchmarks.gateway $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.catalog
	$(BIN)/python -m benchmarks.analytics $(ANALYTICS_BENCH_ARGS)
	$(BIN)/python -m benchmarks.analytics --database-url $(ANALYTICS_BENCH_PG) $(ANALYTICS_BENCH_ARGS)

# The gateway part of `make bench` against an earlier commit in the same run (issue 11: "gateway over floor"
# may rise by at most 10% against 6792a47): a detached git worktree of BASELINE is made in /tmp (or an existing
# one reused), then both gateways and both floors are called in interleaved blocks, compared round by round
# (median of the per-round ratios, quartiles, gateway CPU per call of both). BENCH_ARGS as for `make bench`.
BASELINE ?= 6792a47
bench-compare: install-test
	$(BIN)/python -m benchmarks.gateway --baseline $(BASELINE) --calls 3000 --block 100 $(BENCH_ARGS)

# Long runs, not in `make test`; each writes its figures (docs/reliability.md keeps those of the last run).
# Stress: one `make run`-like process under 200 slow calls, 1,000 idle connections and 500 slowloris
# connections (benchmarks/stress.py; a few minutes, loopback only). STRESS_ARGS to change it.
# Then the same phases through Debian's nginx with deploy/nginx.conf (--through-nginx; skipped without nginx).
# Load: 32 MCP clients for 60 s on 2 nodes x 3 gunicorn workers, PostgreSQL + Redis (DATABASE_URL / REDIS_URL,
# else the test defaults); summary in var/load/. LOAD_ARGS="--duration 120" etc. to change it.
.PHONY: stress install-load
stress: install-test
	$(BIN)/python -m benchmarks.stress $(STRESS_ARGS)
	@if [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1; then \
	  $(BIN)/python -m benchmarks.stress --through-nginx $(STRESS_ARGS); \
	else echo "make stress: nginx is not installed, the --through-nginx run is skipped"; fi
	$(MAKE) --no-print-directory install-load
	$(BIN)/python -m benchmarks.load $(LOAD_ARGS)

lock: | $(BIN)/python
	rm -rf /tmp/aerostack-lock && $(PYTHON) -m venv /tmp/aerostack-lock
	/tmp/aerostack-lock/bin/pip install --quiet -e '.[test,dev,load]'
	( echo '# Exact versions of every package, direct and transitive. `make` installs with `-c constraints.txt`'; \
	  echo '# so that every machine gets the same set. Refresh with `make lock`.'; \
	  /tmp/aerostack-lock/bin/pip freeze --exclude-editable ) > constraints.txt

clean:
	rm -rf $(VENV) var/test.sqlite3 test-artifacts
