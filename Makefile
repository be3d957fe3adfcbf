# The two commands of the README: `make run` (install and start Backdrop) and `make test` (`make test-fast` for
# everyday work).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -c constraints.txt
# Where the tests find the u2netp mask model (tests/conftest.py uses the same folder).
U2NET_CACHE := $(CURDIR)/.cache/u2net

.PHONY: run test test-fast lint bench bench-gpu install install-dev install-ray models browser ray-cluster ray-stop clean

run: install
	$(PY) app.py

test: install-dev models browser lint
	$(PY) -m pytest

# The everyday subset (under 2 minutes): every module's cheap tests, none marked slow (README, Testing).
test-fast: install-dev models lint
	$(PY) -m pytest -m "not slow"

# The layers and no import cycle (import-linter; contracts in pyproject.toml), and ruff's rules.
lint: install-dev
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .

# Benchmarks (benchmarks/README.md): the CPU ones anywhere, the GPU one on a CUDA machine.
bench: install-dev models
	$(PY) benchmarks/preprocess.py && $(PY) benchmarks/overhead.py && $(PY) benchmarks/cold_start.py \
		&& $(PY) benchmarks/sweep_reuse.py

bench-gpu: install-dev
	$(PY) benchmarks/gpu.py

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt constraints.txt | $(VENV)/bin/python
	$(PIP) -r requirements.txt
	touch $@

# The tests cover the optional Ray scale-out too (docs/SCALE.md): install-dev brings Ray, `make run` does not.
$(VENV)/.installed-dev: $(VENV)/.installed-ray requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	touch $@

install-ray: $(VENV)/.installed-ray

$(VENV)/.installed-ray: $(VENV)/.installed requirements-ray.txt
	$(PIP) -r requirements-ray.txt
	touch $@

# A one-machine Ray cluster to try `--ray auto` against (docs/SCALE.md); `make ray-stop` ends it.
ray-cluster: install-ray
	@if $(VENV)/bin/ray status >/dev/null 2>&1; then \
		echo "A Ray cluster is already running on this machine (make ray-stop ends it)."; \
	else \
		$(VENV)/bin/ray start --head --disable-usage-stats --include-dashboard=false; \
	fi
	@echo "Now: .venv/bin/python -m pipeline batch FOLDER --ref REF --prompt TEXT --out OUT --ray auto"

ray-stop:
	@$(VENV)/bin/ray stop 2>&1 | tail -n 1

# The real u2netp mask model, offline (see tests/provision_u2netp.py).
models: $(U2NET_CACHE)/u2netp.onnx

$(U2NET_CACHE)/u2netp.onnx: | $(VENV)/bin/python
	$(PY) tests/provision_u2netp.py $(U2NET_CACHE)

# Debian's chromium for the browser tests (playwright drives it; it never downloads a browser of its own).
# Without root the browser tests are skipped, except under CI, where they must run.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium >/dev/null; } || echo "chromium could not be installed: browser tests will skip"

clean:
	rm -rf $(VENV) .cache .pytest_cache
