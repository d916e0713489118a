# cnnrun — `make help` lists the targets. `make train` and `make test` set everything up themselves.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
CK      := $(shell cksum pyproject.toml | cut -d' ' -f1)
CORE    := $(VENV)/.installed-core-$(CK)
DEV     := $(VENV)/.installed-dev-$(CK)
ARGS    ?=
# Test processes: pytest-xdist spreads the suite over the cores, each test module's tests in one process
# (its module-scoped runs are made once) but each README command alone; the longest go first (tests/conftest.py).
TEST_WORKERS ?= auto
PYTEST  := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

.DEFAULT_GOAL := help
.PHONY: help setup setup-dev data train test test-jax test-full bench reproduce demo-folder clean

help: ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(PY):
	@echo "creating the virtual environment $(VENV) ..."
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# What training needs, no more: each extra comes with the target that needs it (`make test`: the dev tools).
$(CORE): pyproject.toml | $(PY)
	@echo "installing cnnrun and what training needs (TensorFlow, Keras, Hydra, scikit-learn, matplotlib; about 2 GB, a few minutes) ..."
	PYTHONWARNINGS=ignore $(PY) -m pip install -q -e .  # no setuptools banner about editable installs
	rm -f $(VENV)/.installed-core-* && touch $(CORE)

$(DEV): $(CORE)
	@echo "installing the test tools and every extra (pytest, JAX, Optuna, submitit, MLflow, TensorBoard, the exporters) ..."
	PYTHONWARNINGS=ignore $(PY) -m pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-dev-* && touch $(DEV)

setup: $(CORE) ## create .venv and install cnnrun with what training needs
	@echo "ready: $(VENV)/bin/cnnrun"

setup-dev: $(DEV) ## setup, plus the test tools and every extra (what `make test` uses)

data: setup ## provision Fashion-MNIST (found locally, Keras download, or Debian's dataset-fashion-mnist)
	@$(PY) -c "from cnnrun.data import load_mnist_like as f; print('Fashion-MNIST:', f('fashion', None)[1])" 2>/dev/null \
	|| { echo "Fashion-MNIST not found and not downloadable; trying Debian's dataset-fashion-mnist"; \
	     if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	     $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist; }

train: setup data ## train the default experiment (Fashion-MNIST, cnn4); more with ARGS="model=cnn3 ..."
	$(VENV)/bin/cnnrun train $(ARGS)

test: setup-dev ## the linter (ruff), then the fast test suite (default backend, TensorFlow), one process per core
	$(PY) -m ruff check .
	$(PYTEST)

test-jax: setup-dev ## the fast test suite on Keras' JAX backend
	KERAS_BACKEND=jax $(PYTEST)

test-full: setup-dev ## every test, slow ones included
	$(PYTEST) -m ""

bench: setup-dev ## benchmarks: cnnrun vs Keras 2 / plain Keras 3, the photo feed vs tf.data, augmentation cost
	@echo "installing the articles' Keras 2 (tf-keras), the speed baseline ..."
	PYTHONWARNINGS=ignore $(PY) -m pip install -q -e ".[dev,bench]"
	$(PY) bench/speed.py
	$(PY) bench/feed.py
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
