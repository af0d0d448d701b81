# Two commands on a fresh machine do all set-up:
#   make lab    - a local lab: CA, cloudstream, one emulated edge node, `logs -f` through 10003
#   make test   - the whole test suite (real TLS, real processes, real containerd when root)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: lab test bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -m pip install -q -e '.[test,dev]' 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -c 'import websockets, cryptography, grpc, yaml, pytest'
	touch $@

lab: $(VENV)/.installed
	$(PY) scripts/lab.py $(LAB_ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest $(TEST_ARGS)

# every scenario with its baselines, interleaved (about 10 min); BENCH_ARGS=--quick for a 1-min subset
bench: $(VENV)/.installed
	$(PY) -c 'import matplotlib' 2>/dev/null || $(PY) -m pip install -q -e '.[bench]' 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -m bench all $(BENCH_ARGS)

lint: $(VENV)/.installed
	$(PY) -m ruff check --select F,E9,B --exclude proto/cri/v1 .

clean:
	rm -rf $(VENV) .lab
