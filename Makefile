# Two commands on a fresh machine do all set-up:
#   make lab    - a local lab: CA, cloudstream, one emulated edge node, `logs -f` through 10003
#   make test   - the whole test suite (real TLS, real processes, real containerd when root)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# bash with pipefail: a failing pip fails the target even though its output goes through grep
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
# pip's output without its "WARNING: Location" noise (grep finding nothing left is not an error)
QUIET := 2>&1 | { grep -v '^WARNING: Location' || true; }

.PHONY: lab test bench lint typecheck clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip $(QUIET)
	$(PY) -m pip install -q -e '.[test,dev,uvloop]' $(QUIET)
	$(PY) -c 'import websockets, cryptography, grpc, yaml, pytest'
	touch $@

lab: $(VENV)/.installed
	$(PY) scripts/lab.py $(LAB_ARGS)

# lint and types first, then every tier; as root the tests may apt-get install what they need
# (containerd runc busybox-static for the CRI tiers, iptables for the DNAT test): KES_INSTALL=1
test: $(VENV)/.installed lint typecheck
	KES_INSTALL=1 $(PY) -m pytest $(TEST_ARGS)

# every scenario with its baselines, interleaved (about 13 min); BENCH_ARGS=--quick for a 1-min subset
bench: $(VENV)/.installed
	$(PY) -c 'import matplotlib' 2>/dev/null || $(PY) -m pip install -q -e '.[bench]' $(QUIET)
	$(PY) -m bench all $(BENCH_ARGS)

lint: $(VENV)/.installed
	$(PY) -m ruff check --select F,E9,B --exclude streamproto/cri/v1 .

# mypy on the hand-written packages (the files and exclusions are in pyproject.toml [tool.mypy])
typecheck: $(VENV)/.installed
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .lab
