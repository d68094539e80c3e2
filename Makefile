# Two commands on a fresh clone:  `make train` (set up, prepare, train, evaluate) and `make test`.
# Setup pins torch==2.13.0 (a CPU build); an unpinned torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV   ?= .venv
# Data: the project's shared copy when it is there, else $QRNN_DATA / the per-user cache folder.
DATA   ?= $(if $(wildcard ../shared/data/aclImdb_v1.tar.gz),../shared/data,$(QRNN_DATA))
OUT    ?= runs/imdb
EPOCHS ?= 3
DATA_FLAG = $(if $(DATA),--data $(DATA),)
# Extra pip arguments for torch. This project's machines serve torch==2.13.0 as a CPU build; on
# stock PyPI (Linux) it is a CUDA build, so elsewhere use
#   make train TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=

.PHONY: setup train evaluate test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade --quiet pip
	$(VENV)/bin/pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

train: setup
	$(VENV)/bin/qrnn train $(DATA_FLAG) --out $(OUT) --epochs $(EPOCHS)
	$(VENV)/bin/qrnn evaluate $(OUT)/best $(DATA_FLAG)

evaluate: setup
	$(VENV)/bin/qrnn evaluate $(OUT)/best $(DATA_FLAG)

test: setup
	$(VENV)/bin/python -m pytest -q

bench: setup
	for b in benchmarks/bench_*.py; do $(VENV)/bin/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
