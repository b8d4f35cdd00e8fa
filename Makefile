# The course's two entry points (see README):
#   make course   set up the environment and run every notebook (profile: standard)
#   make test     set up the environment and run the test suite
# and, for maintainers and instructors:
#   make site           the course website in build/site/ (offline; SOURCE=build/smoke for a profile run)
#   make test-browser   Chromium checks of the site and of JupyterLab (installs Debian's chromium if missing)
#   make test-min-versions   the unit and kernel tests against the lowest versions pyproject.toml
#                       allows (constraints-min.txt), in a scratch venv, build/min-venv
# Set-up is idempotent: a second run only checks a stamp file.

PYTHON  ?= python3.11
VENV    ?= .venv
PROFILE ?= standard
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.course-setup
KERNEL  := reward-course
# Two workers by default (the CI machine has 2 cores).
PYTEST_WORKERS ?= 2

BROWSER_STAMP := $(VENV)/.browser-setup
SITE    ?= build/site
SOURCE  ?=
# Root installs system packages directly; anyone else through sudo.
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup course test check exercises clean site test-browser browser-setup test-min-versions

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

site: setup
	$(BIN)/course site --output $(SITE) $(if $(SOURCE),--source $(SOURCE))

# Browser checks need Chromium from the system (Debian/Ubuntu: apt) and Playwright from PyPI;
# 'make test' never needs either.
browser-setup: setup $(BROWSER_STAMP)
	@[ -n "$$COURSE_CHROMIUM" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 || { echo "no apt-get here: install Chromium with your system package manager, then rerun (or set COURSE_CHROMIUM=/path/to/chromium)"; exit 1; }; \
	  echo "installing Debian's chromium ..."; \
	  $(SUDO) apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || { \
	    $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q --no-install-recommends chromium; }; }

$(BROWSER_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,browser]'
	touch $(BROWSER_STAMP)

test-browser: browser-setup site
	COURSE_BROWSER_TESTS=1 COURSE_SITE_DIR=$(SITE) $(BIN)/python -m pytest tests/browser

# The lower ends of pyproject.toml's ranges, tested: a fresh venv with every direct dependency at the
# version constraints-min.txt pins (each equal to its lower bound), newest compatible transitive
# dependencies, then the unit tests and the tests that run small notebooks in a kernel (papermill,
# nbclient, ipykernel, matplotlib inline); no chapter notebook runs. Not part of 'make test'.
MIN_VENV  ?= build/min-venv
MIN_STAMP := $(MIN_VENV)/.min-setup
MIN_NO_CHAPTERS := not smoke_run and not runs_clean and not nbval and not newest_chapter

$(MIN_STAMP): pyproject.toml constraints-min.txt
	rm -rf $(MIN_VENV)
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MIN_VENV)/bin/python -m pip install --quiet -c constraints-min.txt torch
	$(MIN_VENV)/bin/python -m pip install --quiet -c constraints-min.txt -e '.[dev]'
	$(MIN_VENV)/bin/python -m pip check
	$(MIN_VENV)/bin/python -m pip freeze --exclude-editable > $(MIN_VENV)/freeze.txt
	$(MIN_VENV)/bin/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (reward course, lowest versions)"
	touch $(MIN_STAMP)

test-min-versions: $(MIN_STAMP)
	$(MIN_VENV)/bin/python -m pytest -m "not notebook" -p no:cacheprovider -n $(PYTEST_WORKERS)
	$(MIN_VENV)/bin/python -m pytest -m notebook -k "$(MIN_NO_CHAPTERS)" -p no:cacheprovider -n $(PYTEST_WORKERS) \
	  tests/test_notebooks.py tests/test_grading.py

check: setup
	$(BIN)/course check

exercises: setup
	$(BIN)/course build-exercises

clean:
	rm -rf build grades .pytest_cache
