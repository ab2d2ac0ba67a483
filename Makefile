# `make` installs everything into .venv and reproduces the default profile with DVC;
# `make test` runs the test suite (what CI runs). Both work on a fresh clone.
VENV := .venv
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: all repro test bench install
all: repro

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

repro: install
	dvc repro

test: install
	python -m pytest -n 2 --dist loadgroup

bench: install
	python bench/run_all.py
