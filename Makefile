# Two commands do everything on a fresh machine:
#   make demo   set up .venv and run the main job on the embedded default
#   make test   set up .venv and run the tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision must come as a matching pair (a lone torch upgrade breaks
# torchvision.ops); override for another CUDA or platform, e.g.
#   make demo TORCH="torch==2.9.1 torchvision==0.24.1"
TORCH ?= torch==2.14.1 torchvision==0.29.1
# That pair is torch's CUDA build: .venv takes ~7 GiB. Setup stops before pip starts when
# there is less free disk than this, rather than failing halfway with "No space left".
SETUP_FREE_GIB ?= 7
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c "import shutil, sys; free = shutil.disk_usage('.').free / 2**30; \
	sys.exit(f'setup: {free:.1f} GiB free here, {$(SETUP_FREE_GIB)} GiB needed for $(VENV) (torch and its CUDA libraries); free some disk or set SETUP_FREE_GIB') \
	if free < $(SETUP_FREE_GIB) and not __import__('os').path.exists('$(VENV)/bin/python') else None"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m jobs.train --config configs/shapes_light.yaml

test: $(STAMP)
	$(PY) -m ruff check ssd_core pipeline jobs tests benchmarks
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks.core
	$(PY) -m benchmarks.data
	$(PY) -m benchmarks.pipeline

lint: $(STAMP)
	$(PY) -m ruff check ssd_core pipeline jobs tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
