# BareMail from a checkout. Everything runs with Debian's /usr/bin/python3 and
# Debian's python3-* packages (no venv): that is exactly what the .deb runs on.
PYTHON      ?= /usr/bin/python3
PYTEST      ?= $(PYTHON) -m pytest
SMTP_LISTEN ?= 127.0.0.1:2525
POP3_LISTEN ?= 127.0.0.1:1100
MAILDIR     ?= $(CURDIR)/Maildir

# What the services, the tests and the .deb build need on Debian 12.
APT_PACKAGES = python3 python3-systemd python3-sdnotify python3-pytest \
	python3-hypothesis swaks curl fetchmail mpop systemd systemd-container \
	mmdebstrap dpkg-dev debhelper dh-python pybuild-plugin-pyproject \
	python3-setuptools python3-all man-db

.PHONY: deps run test test-unit test-integration test-install deb bench clean

deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
	    echo "installing:" $$missing; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# Both services in the foreground, socket-activated exactly as systemd would
# (real fd passing), storing into ./Maildir. Ctrl-C stops both.
run: deps
	@echo "SMTP on $(SMTP_LISTEN), POP3 on $(POP3_LISTEN), Maildir $(MAILDIR)"
	@trap 'kill 0' INT TERM; \
	PYTHONPATH=$(CURDIR) systemd-socket-activate -l $(SMTP_LISTEN) --fdname=smtp \
	    -E PYTHONPATH $(PYTHON) -m baremail.cli smtp --config $(CURDIR)/baremail.conf --maildir $(MAILDIR) --idle-exit 0 & \
	PYTHONPATH=$(CURDIR) systemd-socket-activate -l $(POP3_LISTEN) --fdname=pop3 \
	    -E PYTHONPATH $(PYTHON) -m baremail.cli pop3 --config $(CURDIR)/baremail.conf --maildir $(MAILDIR) --idle-exit 0 & \
	wait

test: deps
	$(PYTEST) -q tests

test-unit: deps
	$(PYTEST) -q tests/unit

test-integration: deps
	$(PYTEST) -q tests/integration

test-install: deps
	$(PYTEST) -q tests/install

deb: deps
	dpkg-buildpackage -us -uc -b
	@mkdir -p dist && mv ../baremail*_*.deb ../baremail_*.buildinfo ../baremail_*.changes dist/ 2>/dev/null; ls dist/

clean:
	rm -rf dist build .pybuild *.egg-info debian/.debhelper debian/baremail debian/files \
	    debian/*.substvars debian/*.log debian/debhelper-build-stamp
