# One command per job; each sets itself up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PROFILE ?= cpu
CORES  ?= 2

.PHONY: install test book smoke clean wheels gpu-check

# The venv is rebuilt only when pyproject.toml or constraints.txt change (stamp file).
# constraints.txt pins this machine's PyTorch; pyproject.toml states the range lib25d supports.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/pytest -q --durations=30  # the slowest tests, to see where the time goes

# Build the book for a profile: make book PROFILE=smoke|cpu|paper [CORES=N] [SNAKEFLAGS="--resources gpu=1"]
# Offline, point it at local data: LIB25D_DATA_ROOT=../shared/data/medmnist make book PROFILE=smoke
book: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake -s workflow/Snakefile --configfile config/$(PROFILE).yaml \
		--cores $(CORES) --keep-going --rerun-incomplete $(SNAKEFLAGS)
	@echo "book: results/$(PROFILE)/book/_build/html/index.html"

# The wheels a GPU machine lacks (workflow/gpu_box.txt lists what it has), for `make gpu-check`
# there; needs PyPI. Carry the folder (and the data) with the checkout.
WHEELS ?= wheels
wheels: install
	$(BIN)/python workflow/gpu_wheels.py download --dest $(WHEELS)

# On the GPU machine (CUDA and PyTorch, no registry): make gpu-check OUT=gpu-report DATA=data/medmnist
# GPU_PYTHON is the Python that has PyTorch; GPUFLAGS e.g. "--only train-28 --budget 300".
GPU_PYTHON ?= python3
DATA ?= $(or $(LIB25D_DATA_ROOT),../shared/data/medmnist)
gpu-check:
	@test -n "$(OUT)" || { echo "make gpu-check needs OUT=<folder for the report>" >&2; exit 2; }
	$(GPU_PYTHON) workflow/gpu_check.py --out "$(OUT)" --data "$(DATA)" --wheels "$(WHEELS)" $(GPUFLAGS)

clean:
	rm -rf _build results
