# The README's two commands: `make demo` and `make test`. Both create .venv and install what they need.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.py | sha1sum | cut -c1-12)

.PHONY: demo test bench install clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python setup.py
	$(BIN)/python -m pip install -q --no-cache-dir -e ".[dev]"
	touch $(STAMP)

# `make demo` installs only the demo extra (Beam + LiteRT, no torch): its own stamp, so `make test` still installs [dev].
# A .venv that already has [dev] has everything the demo needs and is reused as it is.
DEMO_STAMP := $(VENV)/.installed-demo-$(shell cat setup.py | sha1sum | cut -c1-12)

$(DEMO_STAMP): $(BIN)/python setup.py
	if [ -f $(STAMP) ]; then :; else $(BIN)/python -m pip install -q --no-cache-dir -e ".[demo]"; fi
	touch $(DEMO_STAMP)

install: $(STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/keras-iqa demo --out demo_out --budget small

# pytest exits 5 when it collected no test: that is a failure here, as any non-zero status.
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# The PyTorch peer of bench/backbones.py needs torch (CPU wheel); without it that area is recorded as failed, nothing else.
bench: $(STAMP)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q -e ".[torch]" || true
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) build *.egg-info
