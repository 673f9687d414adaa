# BareMail from a checkout. Everything runs with Debian's /usr/bin/python3 and
# Debian's python3-* packages (no venv): that is exactly what the .deb runs on.
PYTHON      ?= /usr/bin/python3
PYTEST      ?= $(PYTHON) -m pytest
SMTP_LISTEN ?= 127.0.0.1:2525
POP3_LISTEN ?= 127.0.0.1:1100
IMAP_LISTEN ?= 127.0.0.1:1143
MAILDIR     ?= $(CURDIR)/Maildir

# Debian packages, by what needs them. `make run` installs only the first
# list: running BareMail from the checkout needs nothing else.
RUN_PACKAGES = python3 python3-systemd python3-sdnotify systemd
# `make deb` (and the unit tests dpkg-buildpackage runs).
BUILD_PACKAGES = dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-setuptools \
	python3-all man-db python3-pytest python3-hypothesis
# `make test`: real clients, the containers of the install tests, lintian, piuparts.
TEST_PACKAGES = $(RUN_PACKAGES) $(BUILD_PACKAGES) swaks curl fetchmail mpop systemd-container \
	mmdebstrap debian-archive-keyring util-linux strace lintian piuparts \
	isync offlineimap3 getmail6 neomutt

.PHONY: deps run-deps build-deps run test test-unit test-integration test-install test-reliability deb lintian bench clean

# Installs whichever of $(1) are missing (apt-get update only then).
define apt_install
	@missing=$$(for p in $(1); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
	    echo "installing:" $$missing; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
endef

deps:
	$(call apt_install,$(TEST_PACKAGES))

run-deps:
	$(call apt_install,$(RUN_PACKAGES))

build-deps:
	$(call apt_install,$(BUILD_PACKAGES))

# The three services in the foreground, socket-activated exactly as systemd
# would (real fd passing), over ./Maildir. Ctrl-C stops them.
run: run-deps
	@echo "SMTP on $(SMTP_LISTEN), POP3 on $(POP3_LISTEN), IMAP on $(IMAP_LISTEN), Maildir $(MAILDIR)"
	@trap 'kill 0' INT TERM; \
	PYTHONPATH=$(CURDIR) systemd-socket-activate -l $(SMTP_LISTEN) --fdname=smtp \
	    -E PYTHONPATH $(PYTHON) -m baremail.cli smtp --config $(CURDIR)/baremail.conf --maildir $(MAILDIR) --idle-exit 0 & \
	PYTHONPATH=$(CURDIR) systemd-socket-activate -l $(POP3_LISTEN) --fdname=pop3 \
	    -E PYTHONPATH $(PYTHON) -m baremail.cli pop3 --config $(CURDIR)/baremail.conf --maildir $(MAILDIR) --idle-exit 0 & \
	PYTHONPATH=$(CURDIR) systemd-socket-activate -l $(IMAP_LISTEN) --fdname=imap \
	    -E PYTHONPATH $(PYTHON) -m baremail.cli imap --config $(CURDIR)/baremail.conf --maildir $(MAILDIR) --idle-exit 0 & \
	wait

test: deps
	$(PYTEST) -q tests

test-unit: deps
	$(PYTEST) -q tests/unit

test-integration: deps
	$(PYTEST) -q tests/integration

test-install: deps
	$(PYTEST) -q tests/install

# Faults, load and hostile input against the real programs (strace, tmpfs: run as root).
test-reliability: deps
	$(PYTEST) -q tests/reliability

# BareMail beside Postfix, Dovecot and aiosmtpd in a booted bookworm container
# (bench/README.md has the method and the figures, which this rewrites).
# Not part of `make test`: its figures depend on the machine, and a run takes
# about 15 minutes. BENCH_ARGS=--quick is a smoke run of a minute or two.
BENCH_ARGS ?=
bench: deps
	$(PYTHON) bench/run.py $(BENCH_ARGS)

# The .debs (baremail, baremail-mta), built from a copy of the working tree
# (which stays clean) and put into dist/. Debian's python3 first in PATH:
# pybuild must not find another.
DEB_BUILD_DIR = build/deb
deb: build-deps
	rm -rf $(DEB_BUILD_DIR) && mkdir -p $(DEB_BUILD_DIR)/baremail dist
	tar -C $(CURDIR) --exclude=./.git --exclude=./build --exclude=./dist --exclude=./Maildir \
	    --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis --exclude=.pybuild \
	    -cf - . | tar -C $(DEB_BUILD_DIR)/baremail -xf -
	cd $(DEB_BUILD_DIR)/baremail && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b
	mv $(DEB_BUILD_DIR)/baremail_* $(DEB_BUILD_DIR)/baremail-mta_* dist/
	rm -rf $(DEB_BUILD_DIR)
	@ls dist/

# lintian as the install tests run it (tests/install/test_lintian.py), on what
# `make deb` put into dist/.
lintian: deb
	$(call apt_install,lintian)
	PATH=/usr/sbin:/usr/bin:/sbin:/bin lintian --pedantic --display-info --display-experimental \
	    --show-overrides dist/baremail_*.changes

clean:
	rm -rf dist build .pybuild *.egg-info debian/.debhelper debian/baremail debian/baremail-mta \
	    debian/tmp debian/files debian/*.substvars debian/*.log debian/debhelper-build-stamp
