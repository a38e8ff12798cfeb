# brainstem-ssl — set-up and main jobs. Every target creates what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= data/demo

.PHONY: install demo study study-sweep test lint bench clean

install: $(STAMP)

# Re-installs only when pyproject.toml changes; pip takes torch/torchvision from the local disk.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The whole transfer study on the demo cohort (simulated into $(DATA) first if missing); ends with the
# report's path. Finished stages are reused on a re-run. ARGS passes Hydra overrides, e.g. ARGS=preset=full.
study: $(STAMP)
	$(BIN)/bssl study data.root=$(DATA) $(ARGS)

# The same study once per value of the deciding demo knob, each on its own simulated cohort, then one sweep report
# (benefit of each initialisation over scratch and scratch_matched against the knob) in runs/study/multirun/<time>/.
SWEEP ?= 0.25,0.5,1.0
study-sweep: $(STAMP)
	$(BIN)/bssl study -m demo.brainstem_contrast=$(SWEEP) 'data.root=$(DATA)-c$${demo.brainstem_contrast}' $(ARGS)

demo: $(STAMP)
	$(BIN)/bssl demo-data data.root=$(DATA)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check ssl_pretrain finetune evaluation tests benchmarks
	$(BIN)/ruff format --check ssl_pretrain finetune evaluation tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
