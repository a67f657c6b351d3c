# Two commands on a fresh machine: `make run` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# Python code is generated from the coalition's own protos. proto/google/rpc/ vendors the status and
# error-detail protos for clients in other languages and for buf; Python takes the same files, already
# generated, from googleapis-common-protos (tests/common/test_reflection.py checks they are identical).
PROTOS := $(shell find proto/coalition -name '*.proto')
GENERATED := gen/.generated
BUF_VERSION := 1.47.2
BUF := .tools/node_modules/.bin/buf
export COALITION_TEST_DATABASE_URL ?= postgresql+psycopg2://postgres@127.0.0.1:5432/test

.PHONY: setup gen gen-force run test lint migrate bench bench-quick bench-soak bench-settlement soak fuzz demo demo-lifecycle clean

setup: $(INSTALLED) $(GENERATED)

$(PY):
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Tools first (protoc), then code generation, then the project itself in editable mode.
$(INSTALLED): pyproject.toml setup.py | $(PY)
	$(PY) -m pip install --quiet 'grpcio-tools>=1.66,<2'
	$(MAKE) --no-print-directory gen-force
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(GENERATED): $(PROTOS) | $(INSTALLED)
	$(MAKE) --no-print-directory gen-force

gen: $(GENERATED)

gen-force:
	rm -rf gen && mkdir -p gen
	$(PY) -m grpc_tools.protoc -Iproto --python_out=gen --pyi_out=gen --grpc_python_out=gen $(PROTOS)
	find gen -type d -exec touch {}/__init__.py \;
	rm -f gen/__init__.py
	touch $(GENERATED)

run: setup
	COALITION_ENV=$${COALITION_ENV:-development} $(PY) -m services.run

migrate: setup
	$(PY) -m services.migrate

# One worker per core; a module's tests stay on one worker (they share its servers).
test: setup
	$(PY) -m pytest -q -n auto --dist loadscope tests

lint: setup $(BUF)
	$(VENV)/bin/ruff check services tests bench
	$(VENV)/bin/ruff format --check services tests bench
	$(BUF) lint

$(BUF):
	mkdir -p .tools
	cd .tools && npm install --silent --no-save --no-package-lock @bufbuild/buf@$(BUF_VERSION)

# Ledger and POS (partners -> ledger) figures against one baseline in one run: about 10 minutes (bench/README.md).
bench: setup
	$(PY) -m bench.pos_bench

# The same at 2 s per workload: about 2.5 minutes, half of it seeding 2,000 members with points.
bench-quick: setup
	$(PY) -m bench.pos_bench --quick

# Memory of partners and ledger over EARNS earns (default 1,000,000); not part of test or bench.
bench-soak: setup
	$(PY) -m bench.pos_bench --soak --earns $${EARNS:-1000000}

# Longer fault and load runs of the suite's short versions (same tests, COALITION_SOAK_SCALE times the work).
soak: setup
	COALITION_SOAK_SCALE=$${COALITION_SOAK_SCALE:-10} $(PY) -m pytest -q tests/ledger/test_concurrency.py tests/ledger/test_faults.py

# The descriptor-driven fuzz test at length: 10,000 hostile requests per service on SQLite and PostgreSQL.
fuzz: setup
	COALITION_FUZZ_REQUESTS_PER_SERVICE=$${COALITION_FUZZ_REQUESTS_PER_SERVICE:-10000} $(PY) -m pytest -q -s -p no:logging --timeout=0 tests/fuzz/test_fuzz.py

bench-settlement: setup
	$(PY) -m bench.settlement_close

# Needs `make run` in another terminal: a POS walk-through, then the month's settlement preview
# (this month in COALITION_TIME_ZONE; the clients find the services by the address settings),
# then the points lifecycle on its own private servers (below).
demo: setup
	COALITION_ENV=$${COALITION_ENV:-development} $(PY) -m services.partners.demo_client
	COALITION_ENV=$${COALITION_ENV:-development} $(PY) -m services.settlement.cli preview
	$(PY) -m services.lifecycle_demo

# Earn, expiry notice, expiry and reinstatement over 36 simulated months, in seconds: private
# ledger and partners servers on a temporary SQLite database with a simulated clock; needs no `make run`.
demo-lifecycle: setup
	$(PY) -m services.lifecycle_demo

clean:
	rm -rf $(VENV) gen var .tools .pytest_cache .hypothesis
