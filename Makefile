# postclient -- the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUNDIR := $(CURDIR)/run

.PHONY: all build run test test-deps bench clean

all: build

# The virtualenv with postclient installed in editable mode and the test tools.
# "compat" mode is a plain .pth path entry: the default mode imports a finder
# (pathlib and more) at the start of every Python process, ~20 ms per command.
# setuptools calls compat mode transitional: where it is gone, the default is used.
$(STAMP): setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat \
		|| $(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Rebuild the Cython extensions whenever pyx/ changes, and the delivery agent's
# modules mypyc compiles (setup.py).  The touch marks those as built from the
# current sources even where the generated C, and so the module, did not change
# (tests/conftest.py stops on a compiled module older than its source).
build: $(STAMP)
	$(PY) setup.py -q build_ext --inplace
	touch postclient/smtp/*.so 2>/dev/null || true

# Debian packages of the real peers the tests talk to (as root only).
test-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		sh tests/install-debian-packages.sh; \
	else \
		echo "make test-deps: not root on Debian; tests that need real peers will skip"; \
	fi

# Every test on the build; then the delivery agent's unit tests once more on its
# modules' source, as a build without mypyc runs them (POSTCLIENT_NO_EXTENSIONS=1:
# pure Python throughout).
test: build test-deps
	$(PY) -m pytest tests
	POSTCLIENT_NO_EXTENSIONS=1 $(PY) -m pytest -q tests/unit/test_smtp_*.py tests/unit/test_agent_compiled.py

# The relay on an embedded default configuration under ./run, in the foreground.
run: build
	$(VENV)/bin/postclient -c $(RUNDIR)/etc init --queue-directory $(RUNDIR)/spool --maillog-file /dev/stdout
	$(VENV)/bin/postclient -c $(RUNDIR)/etc check
	exec $(VENV)/bin/postclient -c $(RUNDIR)/etc start-fg

# Codec benchmarks (pytest-benchmark), then the queue drain against Postfix (as root,
# with Debian's postfix package): both write their sections of bench/RESULTS.md.  The
# queue scan benchmark prints its table (recorded by hand in bench/RESULTS.md).
bench: build
	$(PY) -m pytest bench --benchmark-only
	$(PY) bench/drain.py --profile run/bench-profile
	$(PY) bench/qmgr_scan.py

clean:
	rm -rf build $(VENV) *.egg-info *__mypyc*.so postclient/codec/*.so postclient/queue/*.so \
		postclient/smtp/*.so postclient/codec/*.c pyx/*.c
