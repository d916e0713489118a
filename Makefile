# cnnrun — `make help` lists the targets. `make train` and `make test` set everything up themselves.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
ARGS    ?=
# Test processes: pytest-xdist spreads the suite over the cores, each test module's tests in one process
# (its module-scoped runs are made once). Many tests are whole processes that mostly start up and wait.
TEST_WORKERS ?= auto
PYTEST  := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope

.DEFAULT_GOAL := help
.PHONY: help setup data train test test-jax test-full bench reproduce demo-folder clean

help: ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP) ## create .venv and install cnnrun with its dev extras

data: setup ## provision Fashion-MNIST (found locally, Keras download, or Debian's dataset-fashion-mnist)
	@$(PY) -c "from cnnrun.data import load_mnist_like as f; print('Fashion-MNIST:', f('fashion', None)[1])" 2>/dev/null \
	|| { echo "Fashion-MNIST not found and not downloadable; trying Debian's dataset-fashion-mnist"; \
	     if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	     $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist; }

train: setup data ## train the default experiment (Fashion-MNIST, cnn4); more with ARGS="model=cnn3 ..."
	$(VENV)/bin/cnnrun train $(ARGS)

test: setup ## the fast test suite (default backend, TensorFlow), one process per core
	$(PYTEST)

test-jax: setup ## the fast test suite on Keras' JAX backend
	KERAS_BACKEND=jax $(PYTEST)

test-full: setup ## every test, slow ones included
	$(PYTEST) -m ""

bench: setup ## benchmarks: cnnrun vs plain Keras throughput, augmentation cost
	$(PY) bench/throughput.py
	$(PY) bench/augment.py
	$(PY) bench/threads.py

reproduce: setup data ## every article preset (3 seeds) -> docs/RESULTS.md; resumable; ARGS="--seeds 1 --only 'article001_*'"
	$(PY) -m cnnrun.commands.reproduce $(ARGS)

clean: ## remove the virtual environment and caches (keeps outputs/)
	rm -rf $(VENV) .pytest_cache build *.egg-info

demo-folder: setup ## offline demo: a two-class photo folder from photos inside scikit-learn, then train on it
	$(PY) -m cnnrun.commands.demo outputs/demo-photos
	$(VENV)/bin/cnnrun train dataset=folder dataset.path=outputs/demo-photos dataset.image_size=64 \
	  model=mnist_cnn augment=flip trainer.epochs=5 trainer.batch_size=16 $(ARGS)
