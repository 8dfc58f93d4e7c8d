# ctac-book: `make book` builds the whole book on the embedded default; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Inside the venv, so deleting the venv also forgets that it was installed.
STAMP := $(VENV)/.ctac-book-installed

.PHONY: venv book book-quick test constraints clean

venv: $(STAMP)

# Re-installs only when pyproject.toml or constraints.txt is newer than the stamp.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	# pyradiomics ships only an sdist whose build imports numpy: build it without isolation.
	$(BIN)/python -m pip install -c constraints.txt numpy setuptools wheel versioneer
	$(BIN)/python -m pip install -c constraints.txt --no-build-isolation pyradiomics
	$(BIN)/python -m pip install -c constraints.txt -e ".[test]"
	touch $@

book: venv
	$(BIN)/ctac-book run --profile paper
	$(BIN)/ctac-book build --profile paper

book-quick: venv
	$(BIN)/ctac-book run --profile quick
	$(BIN)/ctac-book build --profile quick

test: venv
	$(BIN)/python -m pytest -q

# Pin the venv's current versions (the project itself, pip, setuptools and wheel excluded).
constraints: venv
	{ echo "# Exact versions for 'make venv' (pip install -c constraints.txt -e \".[test]\"), Python 3.11."; \
	  echo "# Regenerate with 'make constraints' after changing dependencies in pyproject.toml."; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v -i -E '^(pip|setuptools|wheel)==' | grep -v '^#' | sed 's/+cpu$$//'; \
	} > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

clean:
	rm -rf _build runs
