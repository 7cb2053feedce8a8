# Two commands do everything on a fresh machine:
#   make demo   set up .venv, then fine-tune minilm-l6 on bbc-news (the built-in defaults)
#   make test   set up .venv, then run the test suite
# torch goes in first and pinned (CPU wheel); override with `make demo TORCH=2.15.0`.
PYTHON ?= python3
TORCH ?= 2.13.0
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-torch-$(TORCH)

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[builtin,peft,log,dev,ray,onnx,serve,search]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/warmstart train --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
