# markex: every target sets up .venv by itself on a fresh machine with python3.11 and make.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo serve path test bench bench-scale soak lint proto clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/markex demo
	@$(MAKE) -s path

# The demo's consortium and its web front ends, kept up until Ctrl-C.
serve: $(STAMP)
	$(BIN)/markex demo --serve

# The two lines that put `markex` on the PATH of the shell they are pasted into.
path:
	@echo "markex is in $(abspath $(BIN)); to run it as \`markex\`, paste one of:"
	@echo "  . $(abspath $(BIN))/activate"
	@echo "  export PATH=\"$(abspath $(BIN)):\$$PATH\""

# The suite in TEST_WORKERS processes (pytest-xdist), each test file in one of them
# (a module's fixtures and servers stay in one process); TEST_WORKERS=0 runs it in this one.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m bench

bench-scale: $(STAMP)
	BENCH_SCALE=1 $(BIN)/python -m bench scale

soak: $(STAMP)
	$(BIN)/python -m tests.soak

lint: $(STAMP)
	$(BIN)/ruff check ledger keys node bench tests

proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=. --pyi_out=. --grpc_python_out=. proto/markex/v1/*.proto

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
