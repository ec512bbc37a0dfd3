# consolegw: the two commands a newcomer needs.
#   make demo   run the daemon on the simulator with a private MQTT broker
#   make test   lint, type-check and run every test
# Both install what is missing (Debian packages via apt-get, a .venv) and are safe to re-run.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# mosquitto: the broker of the demo and the tests; libportaudio2: sounddevice's library;
# minimodem: the reference TTY modem the tests and benchmark compare against;
# openssl: certificates for the TLS test; pulseaudio and libasound2-plugins: the simulated
# sound cards (a private PulseAudio per card, reached through ALSA's pulse plugin).
# systemd: systemd-analyze, which verifies the unit; dpkg-dev: dpkg-shlibdeps, for `make deb`;
# lintian and debootstrap: the .deb's checks and its install into a throwaway Debian root
# (tests/test_deb.py). rabbitmq-server: RabbitMQ 3.10 as a real MQTT 3.1.1 peer, one node or a
# cluster of three (tests/rabbitmq.py); its own service is not used. libhamlib-utils: rigctld.
# opus-tools and espeak-ng: the recorder's bench (opusenc, the reference encoder, on speech);
# chromium and chromium-driver: the recordings web page tested in a real browser.
# multimon-ng: the reference DTMF (and 5-tone) decoder the signalling tests compare against.
DEB_PACKAGES := mosquitto mosquitto-clients libportaudio2 minimodem openssl pulseaudio ser2net \
	libasound2-plugins systemd dpkg-dev lintian debootstrap rabbitmq-server libhamlib-utils \
	opus-tools espeak-ng chromium chromium-driver multimon-ng

.PHONY: demo test lint typecheck pytest system-deps venv bench deb clean

demo: system-deps venv
	$(BIN)/python -m hw_sim.demo

test: system-deps venv lint pytest

# ruff (style, imports, complexity) and mypy --strict over the product, the simulator, the
# tests and the benches ([tool.mypy] packages in pyproject.toml), then the AsyncAPI document.
lint: venv
	$(BIN)/ruff check gateway drivers hw_sim tests bench
	$(BIN)/ruff format --check gateway drivers hw_sim tests bench
	$(BIN)/mypy
	$(BIN)/consolegw asyncapi --check -o docs/asyncapi.yaml

typecheck: venv
	$(BIN)/mypy

# Two workers, a test file each at a time (a file's fixtures, such as the RabbitMQ cluster,
# stay in one worker): the suite spends most of its time waiting on brokers, daemons and
# outages, not on the CPU, so two halve it on two cores.
pytest: venv
	$(BIN)/pytest -q -n 2 --dist loadfile --durations=25

system-deps:
	@missing=""; \
	for pkg in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	if ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then missing="$$missing python3-venv"; fi; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

bench: system-deps venv
	$(BIN)/python bench/event_throughput.py

# The Debian package for a console: build/consolegw_<version>_<arch>.deb (README.md,
# "Installing on a console"). Needs PyPI at build time.
deb: system-deps venv
	packaging/build-deb.sh build

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
