# One command per job; each sets itself up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PROFILE ?= cpu
CORES  ?= 2

.PHONY: install test book smoke clean

# The venv is rebuilt only when pyproject.toml changes (stamp file).
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/pytest -q

# Build the book for a profile: make book PROFILE=smoke|cpu|paper [CORES=N] [SNAKEFLAGS="--resources gpu=1"]
# Offline, point it at local data: LIB25D_DATA_ROOT=../shared/data/medmnist make book PROFILE=smoke
book: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake -s workflow/Snakefile --configfile config/$(PROFILE).yaml \
		--cores $(CORES) --keep-going --rerun-incomplete $(SNAKEFLAGS)
	@echo "book: results/$(PROFILE)/book/_build/html/index.html"

clean:
	rm -rf _build results
