# The course's two entry points (see README):
#   make course   set up the environment and run every notebook (profile: standard)
#   make test     set up the environment and run the test suite
# Set-up is idempotent: a second run only checks a stamp file.

PYTHON  ?= python3.11
VENV    ?= .venv
PROFILE ?= standard
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.course-setup
KERNEL  := reward-course
# Two workers by default (the CI machine has 2 cores).
PYTEST_WORKERS ?= 2

.PHONY: setup course test check exercises clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (reward course)"
	touch $(STAMP)

course: setup
	$(BIN)/course run --profile $(PROFILE)

test: setup
	$(BIN)/course check
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS)

check: setup
	$(BIN)/course check

exercises: setup
	$(BIN)/course build-exercises

clean:
	rm -rf build grades .pytest_cache
