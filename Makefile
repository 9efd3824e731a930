# The two set-up commands of README.md: `make demo` and `make test`. Both create .venv on first use.
VENV ?= .venv
PYTHON ?= python3
PIP := $(VENV)/bin/pip
# The CPU wheel of torch 2.13.0 lies on this project's build machines; elsewhere any torch >= 2.4 does.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)" || $(PIP) install -q "torch>=2.4"
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/steadydepth demo

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q -ra

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .steadydepth demo-output .pytest_cache
