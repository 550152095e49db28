# Two commands for a fresh machine: `make demo` and `make test`.
# Both install what they need: Debian packages when missing, and a venv in .venv.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := openssh-client openssh-server rsync sshpass golang-go golang-golang-x-crypto-dev haproxy busybox-static
# Debian packages Go sources here; the Go client test (tests/test_go_client.py) builds offline from it.
GO_X_CRYPTO := /usr/share/gocode/src/golang.org/x/crypto
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck unit suite bench system-deps clean dist

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

system-deps:
	@missing=""; \
	for p in ssh:openssh-client sshd:openssh-server rsync:rsync sshpass:sshpass go:golang-go haproxy:haproxy; do \
	  bin=$${p%%:*}; pkg=$${p##*:}; \
	  command -v $$bin >/dev/null 2>&1 || [ -x /usr/sbin/$$bin ] || missing="$$missing $$pkg"; \
	done; \
	[ -d $(GO_X_CRYPTO) ] || missing="$$missing golang-golang-x-crypto-dev"; \
	dpkg -s busybox-static >/dev/null 2>&1 || missing="$$missing busybox-static"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: $(STAMP)
	$(PY) -m diegossh.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check diegossh twisted tests docs/examples $(wildcard bench)
	$(VENV)/bin/ruff format --check diegossh twisted tests docs/examples $(wildcard bench)
	$(VENV)/bin/lint-imports --no-cache  # the layers: docs/architecture.md

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The fast tier: no OpenSSH, no subprocesses, nothing that takes seconds; on
# every core (pytest-xdist: 27 s -> 19 s on 2 cores).
unit: $(STAMP)
	$(VENV)/bin/pytest -q -m "not interop and not slow" -n auto

# Everything, interop and slow tests included.
suite: system-deps $(STAMP)
	$(VENV)/bin/pytest -q

test: system-deps $(STAMP) lint typecheck suite

# dist/diego-sshd: the daemon as one static executable (docs/dist.md). The one-file
# test (tests/test_onefile.py, slow) builds its own copy unless this one is fresh.
dist: $(STAMP)
	$(PY) -m pip install -q -e '.[dist]'
	$(PY) packaging/dist.py dist/diego-sshd

bench: system-deps $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) build dist twisted/plugins/dropin.cache
