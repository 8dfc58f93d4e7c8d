# ctac-book: `make book` builds the whole book on the embedded default; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Inside the venv, so deleting the venv also forgets that it was installed.
STAMP := $(VENV)/.ctac-book-installed

.PHONY: venv browser book book-quick test lab bench bench-models constraints clean

venv: $(STAMP)

# Re-installs only when pyproject.toml or constraints.txt is newer than the stamp.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	# pyradiomics ships only an sdist whose build imports numpy: build it without isolation.
	$(BIN)/python -m pip install -c constraints.txt numpy setuptools wheel versioneer
	$(BIN)/python -m pip install -c constraints.txt --no-build-isolation pyradiomics
	$(BIN)/python -m pip install -c constraints.txt -e ".[test,lab]"
	touch $@

book: venv
	$(BIN)/ctac-book run --profile paper
	$(BIN)/ctac-book build --profile paper

book-quick: venv
	$(BIN)/ctac-book run --profile quick
	$(BIN)/ctac-book build --profile quick

test: venv browser
	# Two workers, whole files each (module fixtures, such as a run of the book, are built once); the slow
	# files run side by side, which keeps the suite within its 15 minutes on two cores.
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# JupyterLab on the chapters, with the project's kernel: the notebooks name the kernel "python3", which is
# registered inside the venv (share/jupyter/kernels) and, with JUPYTER_PREFER_ENV_PATH, found before any
# "python3" kernel of the user's or the system's. Executing a chapter needs a run directory (`make book-quick`
# makes runs/quick) and a parameter cell whose run_dir points at it from notebooks/, where the kernel starts;
# the patient explorer of chapter 5 and the exercises need a live kernel.
LAB_PORT ?= 8888
lab: venv
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ctac-book)"
	JUPYTER_PREFER_ENV_PATH=1 $(BIN)/jupyter lab --port $(LAB_PORT) notebooks/

# The whole paper profile from an empty run directory (and an empty phantom cache): each stage's time,
# the total and the slowest cells. About as long as `make book`'s run.
bench: venv
	$(BIN)/python benchmarks/bench_book.py --profile paper

# The models chapter's fitting against the same procedure as it was before issue 18 (procedure="reference")
# and the authors' grid search, side by side in one run.
bench-models: venv
	$(BIN)/python benchmarks/bench_models.py

# Headless Chromium and its WebDriver from Debian, for the browser test of the built book
# (tests/publish/test_browser.py). Installed with apt-get when absent: as root, else through sudo.
BROWSER_PACKAGES := chromium chromium-driver
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
	  echo "browser: $$(command -v chromium) and $$(command -v chromedriver) are installed"; exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make browser: chromium (with chromedriver) is not installed and apt-get is not available;" \
	       "install Debian's '$(BROWSER_PACKAGES)' packages or their equivalent" >&2; exit 1; fi; \
	if [ "$$(id -u)" -eq 0 ]; then SUDO=""; \
	elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; \
	else echo "make browser: chromium is not installed and this user is not root and has no sudo;" \
	          "ask an administrator to run 'apt-get install $(BROWSER_PACKAGES)'" >&2; exit 1; fi; \
	echo "browser: installing $(BROWSER_PACKAGES) with $${SUDO:+sudo }apt-get"; \
	{ $$SUDO apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES); } || \
	  { echo "make browser: 'apt-get install $(BROWSER_PACKAGES)' failed (see above); the browser test needs them" >&2; \
	    exit 1; }; \
	command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  { echo "make browser: apt-get succeeded but chromium or chromedriver is still not on PATH" >&2; exit 1; }

# Pin the venv's current versions (the project itself, pip, setuptools and wheel excluded).
constraints: venv
	{ echo "# Exact versions for 'make venv' (pip install -c constraints.txt -e \".[test]\"), Python 3.11."; \
	  echo "# Regenerate with 'make constraints' after changing dependencies in pyproject.toml."; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v -i -E '^(pip|setuptools|wheel)==' | grep -v '^#' | sed 's/+cpu$$//'; \
	} > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

clean:
	rm -rf _build runs
