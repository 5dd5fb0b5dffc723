# Set-up, demo, tests and benchmarks. Each target creates the virtual environment first if needed.
#   make demo                                   the daily DAG on the bundled demo data
#   make demo DATA=reviews.parquet DATE=2014-12-01   on your own data, for one day
#   make test                                   the test suite
#   make bench                                  the benchmark scripts

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv demo test bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

demo: venv
	$(PY) -m textclf demo $(if $(DATA),--data "$(DATA)") $(if $(DATE),--date $(DATE))

test: venv
	$(PY) -m pytest

bench: venv
	$(PY) benchmarks/run_all.py

clean:
	rm -rf .textclf
