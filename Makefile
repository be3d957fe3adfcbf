# The two commands of the README: `make run` (install and start Backdrop) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -c constraints.txt
U2NET_HOME ?= $(CURDIR)/.cache/u2net
export U2NET_HOME

.PHONY: run test install install-dev models clean

run: install
	$(PY) -m pipeline --help

test: install-dev models
	$(PY) -m pytest

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt constraints.txt | $(VENV)/bin/python
	$(PIP) -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	touch $@

# The real u2netp mask model, offline (see tests/provision_u2netp.py).
models: $(U2NET_HOME)/u2netp.onnx

$(U2NET_HOME)/u2netp.onnx: | $(VENV)/bin/python
	$(PY) tests/provision_u2netp.py $(U2NET_HOME)

clean:
	rm -rf $(VENV) .cache .pytest_cache
