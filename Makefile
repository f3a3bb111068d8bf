# steanet: two commands for a fresh machine, `make demo` (the main job) and `make test` (the CI gate).
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch pins for this machine type (CPU machine with torch 2.14.1 / torchvision 0.29.1 on local disk; a plain
# torch 2.13.0 cannot import open_clip's torchvision). setup.py keeps open ranges; override with TORCH_PINS= elsewhere.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.install-stamp
export HF_HUB_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export MPLBACKEND := Agg
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install demo experiments serve test check-sync check-clean check-readme nbtest pytest lab ui dashboard readme export clean-nbs help

help:
	@echo "make demo    - install, then run the embedded demo (synthetic emotion videos, three MLflow runs)"
	@echo "make experiments - execute nbs/experiments/*.ipynb (NB=one.ipynb: only it) and store their figures/tables"
	@echo "make test    - install, then the gate: export sync, clean notebooks, README sync, nbdev_test, pytest"
	@echo "make lab     - JupyterLab on 127.0.0.1 (the notebooks in nbs/)"
	@echo "make serve RUN=<run id> - serve that run's MLflow Model on http://127.0.0.1:5001/invocations (MEDIA=DIR: also paths under DIR)"
	@echo "make ui      - MLflow UI on the project's default store (sqlite:///mlruns/mlflow.db)"
	@echo "make dashboard - optuna-dashboard on the project's study storage (sqlite:///mlruns/optuna.db), 127.0.0.1"
	@echo "make readme  - render README.md from nbs/index.ipynb"
	@echo "make export  - nbdev_clean + nbdev_export + readme (run before committing)"

install: $(STAMP)

$(STAMP): setup.py settings.ini
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS) -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

demo: install
	$(BIN)/steanet demo

# the experiment notebooks, executed (slow cells too) with their outputs stored (each < 1 MB; stderr noise dropped),
# then cleaned like every notebook (nbdev_clean keeps outputs, drops execution counts and metadata)
experiments: install
	STEANET_HOME="$${STEANET_HOME:-$(CURDIR)}" $(BIN)/python -m steanet.experiments $(NB)
	$(BIN)/nbdev_clean --fname nbs/experiments

test: install check-sync check-clean check-readme nbtest pytest
	@echo "make test: all gates passed"

# 1. notebooks and package in sync
check-sync: install
	@before=$$(find steanet -name '*.py' -type f | sort | xargs sha256sum)
	$(BIN)/nbdev_export
	after=$$(find steanet -name '*.py' -type f | sort | xargs sha256sum)
	if [ "$$before" != "$$after" ]; then
	  echo "GATE 1 FAILED: nbdev_export changed steanet/ - the package was edited by hand or a notebook was not exported."
	  diff <(echo "$$before") <(echo "$$after") || true
	  echo "Fix: make the change in the notebook under nbs/, run 'make export' and commit nbs/ and steanet/ together."
	  exit 1
	fi
	echo "gate 1/5: nbdev_export leaves steanet/ unchanged"

# 2. notebooks clean
check-clean: install
	@before=$$(find nbs -name '*.ipynb' -type f | sort | xargs sha256sum)
	$(BIN)/nbdev_clean
	after=$$(find nbs -name '*.ipynb' -type f | sort | xargs sha256sum)
	if [ "$$before" != "$$after" ]; then
	  echo "GATE 2 FAILED: nbdev_clean changed notebooks (outputs, execution counts or metadata were committed)."
	  diff <(echo "$$before") <(echo "$$after") || true
	  echo "Fix: run 'make export' (it runs nbdev_clean) and commit the cleaned notebooks."
	  exit 1
	fi
	echo "gate 2/5: nbdev_clean leaves nbs/ unchanged"

# 3. README rendered from nbs/index.ipynb
check-readme: install
	@tmp=$$(mktemp -d)
	$(BIN)/jupyter nbconvert --log-level=ERROR --to markdown nbs/index.ipynb --output-dir "$$tmp" --output README
	if ! diff -u README.md "$$tmp/README.md"; then
	  echo "GATE 3 FAILED: README.md is not what nbs/index.ipynb renders to."
	  echo "Fix: edit nbs/index.ipynb (not README.md), run 'make readme' and commit both."
	  rm -rf "$$tmp"; exit 1
	fi
	rm -rf "$$tmp"
	echo "gate 3/5: README.md is in sync with nbs/index.ipynb"

# 4. notebooks execute (cells flagged slow/cuda are skipped)
nbtest: install
	@$(BIN)/nbdev_test --n_workers 2 --timing || { echo "GATE 4 FAILED: a notebook cell raised (see above). Fix the notebook, then 'make export'."; exit 1; }
	echo "gate 4/5: notebooks execute"

# 5. the test suite, on PYTEST_WORKERS pytest-xdist workers (one compute thread each, tests/conftest.py); a file's tests
# stay on one worker (they share module fixtures), the slowest files start first (conftest's SLOW_FIRST)
PYTEST_WORKERS ?= 2
pytest: install
	@$(BIN)/python -m pytest tests/ -q -ra --durations=15 -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder \
	  || { echo "GATE 5 FAILED: pytest tests/ failed (see above)."; exit 1; }
	echo "gate 5/5: pytest passed"

readme: install
	$(BIN)/jupyter nbconvert --log-level=ERROR --to markdown nbs/index.ipynb --output-dir . --output README

export: install
	$(BIN)/nbdev_clean
	$(BIN)/nbdev_export
	$(MAKE) readme

lab: install
	$(BIN)/jupyter lab --ip 127.0.0.1 --no-browser --notebook-dir nbs

# the store of `steanet` runs: $MLFLOW_TRACKING_URI if set (a tracking server is its own UI), else the project's sqlite file
ui: install
	@mkdir -p mlruns
	@uri="$${MLFLOW_TRACKING_URI:-sqlite:///mlruns/mlflow.db}"; \
	shown=$$(printf '%s' "$$uri" | sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#'); \
	case "$$uri" in http://*|https://*) echo "MLFLOW_TRACKING_URI=$$shown is a tracking server: open that address"; exit 0;; esac; \
	echo "MLflow UI of $$shown on http://127.0.0.1:$${PORT:-5000}"; \
	exec $(BIN)/mlflow ui --host 127.0.0.1 --port $${PORT:-5000} --backend-store-uri "$$uri" --default-artifact-root ./mlruns

# a run's MLflow Model over HTTP (steanet serve: mlflow models serve --env-manager local with this venv's bin on PATH)
serve: install
	@test -n "$(RUN)" || { echo "usage: make serve RUN=<run id | runs:/<id>/model | models:/NAME/VERSION> [PORT=5001] [MEDIA=DIR]"; exit 2; }
	$(BIN)/steanet serve "$(RUN)" --port "$${PORT:-5001}" $${MEDIA:+--media-root "$$MEDIA"}

# studies of `steanet tune` (default storage) with the plots / trials.csv / best_config.yaml it attaches (mlruns/optuna-artifacts)
dashboard: install
	@mkdir -p mlruns/optuna-artifacts
	$(BIN)/optuna-dashboard --host 127.0.0.1 --port $${PORT:-8080} --artifact-dir mlruns/optuna-artifacts $${STORAGE:-sqlite:///mlruns/optuna.db}
