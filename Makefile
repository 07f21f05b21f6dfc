# Two commands do everything on a fresh Debian machine with Python 3.11:
#   make demo   set up, generate the demo data, run sessions/demo.yaml on the simulated rig, export it
#   make test   set up and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check setup host firmware tools clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)
	@echo "rig is installed as $(CURDIR)/$(BIN)/rig; to type just 'rig': export PATH=\"$(CURDIR)/$(BIN):\$$PATH\""

demo/data/train.csv: $(STAMP) rig/demo_data.py
	$(BIN)/python -m rig.demo_data demo/data

# Phantom DICOMs (12-bit, MONOCHROME1 and 2, VOI LUT, RLE) for sessions/demo-dicom.yaml.
demo/dicom/train.csv: $(STAMP) rig/demo_dicom.py
	$(BIN)/python -m rig.demo_dicom demo/dicom

demo: $(STAMP) host demo/data/train.csv demo/dicom/train.csv
	$(BIN)/rig run sessions/demo.yaml
	$(BIN)/rig status sessions/demo.yaml
	$(BIN)/rig export sessions/demo.yaml --out demo/export
	$(BIN)/rig report sessions/demo.yaml

# The simulated rig's controller: the firmware's protocol core built for this PC (needs only g++,
# the Debian package is installed when missing).
host:
	@command -v g++ >/dev/null || (apt-get update -q && apt-get install -y --no-install-recommends g++)
	$(MAKE) -C firmware host

# The AVR toolchain and simavr come from Debian packages (installed only when missing).
firmware:
	sh firmware/install-deps.sh
	$(MAKE) -C firmware

# tmux drives the terminal UI test of `rig jog`; headless chromium opens `rig report`'s page in its test
# (Debian packages, installed only when missing).
tools:
	command -v tmux >/dev/null || (apt-get update -q && apt-get install -y --no-install-recommends tmux)
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y --no-install-recommends chromium)

test: $(STAMP) host firmware tools check
	$(BIN)/python -m pytest -q

# Static checks: ruff (lint) on code and tests, strict mypy on the package (both configured in pyproject.toml).
check: $(STAMP)
	$(BIN)/ruff check rig tests bench
	$(BIN)/mypy

clean:
	rm -rf demo/run demo/export demo/data demo/dicom
