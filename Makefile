# lwlc's entry points. Only python3 and make are needed: `setup` builds .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LWLC := $(BIN)/lwlc
# Rebuilt (pip install) only when pyproject.toml changes, so a second `make setup` is instant.
STAMP := $(VENV)/.lwlc-installed

DEMO_CONFIG := configs/demo.yaml
DEMO_DIR := runs/demo
DEMO_CKPT := $(DEMO_DIR)/checkpoints/last.ckpt
DEMO_ANALYZE = $(LWLC) analyze --ckpt $(DEMO_CKPT) --out $(DEMO_DIR)/analysis --overwrite

.PHONY: setup demo test test-slow test-gpu bench lint clean experiment

setup: $(STAMP)

# No torch pin: pyproject's ranges choose the newest release pip can see. On the CI machine
# that is the local index's torch 2.14.1 / torchvision 0.29.1, which its own pip constraints
# (/etc/xdg/pip/constraints.txt, see `pip config list`) cap; elsewhere the newest 2.x.
$(STAMP): pyproject.toml
	@echo "lwlc setup: installing lwlc with torch, Lightning, torchvision, W&B, matplotlib and the test tools into $(VENV)/ (several GB with torch; 2-10 minutes the first time, instant afterwards)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	@echo "lwlc setup: recording the answers of 'lwlc fit --help' and of unknown flags for this terminal's width, so that they come at once (about 10 s)"
	@cols=$$( { stty size </dev/tty; } 2>/dev/null | cut -d' ' -f2); \
		COLUMNS=$${cols:-80} $(LWLC) fit --help >/dev/null 2>&1 || true
	touch $@

# --overwrite replaces an earlier demo run in $(DEMO_DIR) (its checkpoints, barriers, logs and
# W&B run; nothing else there), so that $(DEMO_CKPT) is always this run's.
# It ends with one sentence saying what the barrier heatmap shows and where it is.
demo: setup
	$(LWLC) fit --config $(DEMO_CONFIG) --overwrite
	$(DEMO_ANALYZE)
	@$(BIN)/python -m lwlc.tracking.verdict $(DEMO_DIR)/barriers

# One pytest worker per core, at most 4 (pytest-xdist); tests/conftest.py gives each worker one
# torch thread. On the 2-core CI machine: 3.5 minutes instead of 6.3 in one process.
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; n = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(); print(min(4, n or 1))")

test: setup
	$(BIN)/pytest -m "not slow and not gpu" -q -n $(TEST_WORKERS)

test-slow: setup
	$(BIN)/pytest -m "slow and not gpu" -q

# The CUDA path (engine, fit in bf16-mixed, analyze on the GPU): on a machine with a GPU.
test-gpu: setup
	$(BIN)/pytest -m gpu -q

bench: setup
	$(BIN)/python benchmarks/bench_pair.py

lint: setup
	$(BIN)/ruff check src tests

# One of the paper's experiments (experiments/README.md): make experiment NAME=cumulative QUICK=1
# (SMOKE=1 for seconds; neither: the paper's scale, for a GPU). Without NAME: the list.
experiment: setup
	@if [ -z "$(NAME)" ]; then $(LWLC) experiment --list; \
		echo "usage: make experiment NAME=<name> [QUICK=1|SMOKE=1]"; exit 2; fi
	$(LWLC) experiment $(NAME) $(if $(QUICK),--quick) $(if $(SMOKE),--smoke) --overwrite

clean:
	rm -rf runs lightning_logs .pytest_cache .ruff_cache build dist src/*.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
