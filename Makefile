# llmft: `make install demo` sets up and runs the main job; `make test` runs every test. See README.md.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# the CPU torch pin lives in settings.ini, beside every other pin
TORCH_CPU := $(shell sed -n 's/^torch_cpu *= *//p' settings.ini)
TORCH_INDEX_URL ?=
# the tested set: requirements/lock-cpu.txt, or lock-cuda.txt where a CUDA GPU answers; LATEST=1 resolves the newest
# releases within the ranges of settings.ini instead (`make upgrade` tests them and moves the lock)
HAS_CUDA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
LOCK := requirements/lock-$(if $(HAS_CUDA),cuda,cpu).txt
LATEST ?=
CONSTRAINTS := $(if $(LATEST),,-c $(LOCK))
# TORCH_INDEX_URL (e.g. PyTorch's CPU index) serves torch alone; its dependencies come from PyPI with the rest
TORCH_FROM := $(if $(TORCH_INDEX_URL),--no-deps --index-url $(TORCH_INDEX_URL))
# LATEST=1 moves an installed venv too, every package but the pinned CPU torch
UPGRADE := $(if $(LATEST),--upgrade --upgrade-strategy eager $(if $(HAS_CUDA),,"$(TORCH_CPU)"))
# the stamp names what the venv was installed from: asking for the other set installs again
INSTALL_FROM := $(if $(LATEST),latest,$(LOCK))
REINSTALL := $(if $(filter $(INSTALL_FROM),$(shell cat $(VENV)/.installed 2>/dev/null)),,FORCE)
# llama-cpp-python (a dev dependency: the GGUF tests run the files in llama.cpp) builds from source: a portable CPU build
# (AVX2 and friends, not -march=native), without the multimodal library nothing here uses
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_BLAS=OFF -DLLAVA_BUILD=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install browser demo test test-fast docs export clean parity upgrade lock-cuda

install: $(VENV)/.installed

$(VENV)/.installed: settings.ini setup.py $(LOCK) $(REINSTALL)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@echo "installing $(if $(LATEST),the newest releases within settings.ini's ranges (LATEST=1),the tested set $(LOCK))"
	@echo "$(if $(HAS_CUDA),CUDA GPU found: torch from pip's default index,No CUDA GPU: the CPU build $(TORCH_CPU) first)"
	$(if $(HAS_CUDA),,$(PY) -m pip install -q "$(TORCH_CPU)" $(CONSTRAINTS) $(TORCH_FROM))
	$(PY) -m pip install -q -e '.[dev,optim,trackers,ray,board,mm]' $(CONSTRAINTS) $(UPGRADE)
	$(PY) -m pip check
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(MAKE) --no-print-directory browser
	echo $(INSTALL_FROM) > $@

FORCE:

# the browser test drives Debian's chromium through Playwright (no browser download): install it where apt-get runs as root
browser:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium (apt-get) for the browser test"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null || \
	  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; \
	else echo "chromium is missing and cannot be installed here: install it (e.g. sudo apt-get install chromium) for tests/test_browser.py"; fi

models/tiny-llama3: | install
	$(PY) -c "from llmft.testing import save_tiny_model; print('built', save_tiny_model('models/tiny-llama3'))"

# the tiny multimodal fixtures the recipes of examples/train_lora/*{llava,qwen2vl,gemma3,qwen2audio}* name
MM_MODELS := models/tiny-llava models/tiny-qwen2-vl models/tiny-gemma3 models/tiny-qwen2-audio
$(MM_MODELS): | install
	$(PY) -c "from llmft.testing_mm import save_tiny_mm_model as s; print('built', s('$@', '$(subst -,_,$(patsubst models/tiny-%,%,$@))'))"

demo: install models/tiny-llama3 $(MM_MODELS)
	$(BIN)/llmft train examples/quickstart_sft.yaml

test: install
	$(BIN)/nbdev_test --n_workers 2 --flags slow
	$(BIN)/pytest -q tests

# the quick loop: notebook cells and tests flagged slow are left out (about 5 minutes on two cores: the notebooks
# under a minute, the not-slow tests about four; `make test` runs everything, about 25)
test-fast: install
	$(BIN)/nbdev_test --n_workers 2
	$(BIN)/pytest -q -m 'not slow' tests

# the documentation site, offline, into _docs/ (executed notebooks are cached in _proc/): see docs/site.md
docs: install
	$(PY) tools/docs.py

export: install
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean && $(BIN)/nbdev_clean --fname tutorials && $(PY) tools/readme.py

clean:
	rm -rf saves models _docs _docs_src _docs_src.yml _proc .upgrade-venv

# the newest releases within the ranges, installed in a scratch venv and run through the whole test suite; only if it
# passed are requirements/lock-*.txt rewritten; the report names every package that moved (see tools/lock.py)
upgrade:
	python3 tools/lock.py upgrade

# lock-cuda.txt resolved again from lock-cpu.txt (pip's dry run: metadata only)
lock-cuda: install
	$(PY) tools/lock.py cuda

# side-by-side with LLaMA-Factory 0.9.5 (not in CI: it installs a second torch stack into .lf-venv)
LF_VENV ?= .lf-venv
$(LF_VENV)/bin/llamafactory-cli:
	bash ../shared/bench-lf/setup_lf_venv.sh $(LF_VENV)

parity: install $(LF_VENV)/bin/llamafactory-cli
	$(PY) bench/parity.py --lf-python $(LF_VENV)/bin/python $(PARITY_ARGS)
	$(PY) bench/parity_mm.py --lf-python $(LF_VENV)/bin/python
