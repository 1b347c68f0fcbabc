# Every target installs what it needs into .venv on first use, so a fresh clone needs only python3.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
ARGS ?=

.PHONY: help install fit test test-quick lint mutation notebook bench bench-serve results clean
.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" -e ".[dev,deploy,tensorboard,tracking,notebook,sweep]"
	touch $@

install: $(INSTALLED) ## Create .venv and install the package with its dev, deploy, tensorboard, tracking, notebook and sweep extras

fit: $(INSTALLED) ## Train the tutorial's 5 epochs and print the test accuracy (extra flags: ARGS="...")
	$(PY) -m mnist_dense fit $(ARGS)

test: $(INSTALLED) ## Run the whole test suite, the one CI runs, on two processes (pytest flags: ARGS="...")
	$(PY) -m pytest -n 2 --dist loadfile $(ARGS)

test-quick: $(INSTALLED) ## The inner loop: tests/unit (tests/e2e starts processes: the CLI, servers, DDP, a browser)
	$(PY) -m pytest tests/unit $(ARGS)

lint: $(INSTALLED) ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

$(VENV)/.mutation-installed: $(INSTALLED)
	$(PY) -m pip install --quiet -e ".[mutation]"
	touch $@

mutation: $(VENV)/.mutation-installed ## mutmut over the core against the quick tests; scores into docs/development.md
	$(PY) -m benchmarks.mutation $(ARGS)

notebook: $(INSTALLED) ## Execute examples/tutorial.ipynb (5 epochs) into runs/notebook/tutorial.ipynb, outputs kept
	mkdir -p runs/notebook
	$(VENV)/bin/jupyter-execute examples/tutorial.ipynb --output="$(CURDIR)/runs/notebook/tutorial" --timeout=1800
	@echo "Executed notebook: runs/notebook/tutorial.ipynb"

clean: ## Remove run outputs and decompressed data (keeps .venv)
	rm -rf runs lightning_logs .pytest_cache mutants
	rm -f data/MNIST/raw/*-ubyte

bench: $(INSTALLED) ## fit vs the usual port, a plain loop and the tutorial's Keras program; the table into docs/speed.md (ARGS="--keras_python PATH" for the Keras run)
	$(PY) -m benchmarks.bench $(ARGS)

bench-serve: $(INSTALLED) ## Load-test `serve --public` (nginx in front) beside `serve` alone: 10,000 test digits, batching on and off, then hostile clients; the tables into docs/serving.md
	$(PY) -m benchmarks.serve_load $(ARGS)

results: $(INSTALLED) ## Rerun every accuracy figure (seeds 0-2, configs, conv nets, shifts, own pictures); tables into the docs
	$(PY) -m benchmarks.results $(ARGS)
