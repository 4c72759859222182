# jukebox-pl: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/jukebox-pl
STAMP := $(VENV)/.installed
DATA ?= data
SR ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
PRESET ?= tiny
RUN ?= runs/$(PRESET)
LEVEL ?= top
STAGE ?=
SHARDS ?= $(DATA)/toy_shards
ARGS ?=

.PHONY: help install browser test test-fast lint format docs toy-data toy-shards shards check-shards train-level train-stage demo sample finetune import-openai bench bench-prior bench-sampling bench-quality bench-finetune bench-conditioning bench-codec-ceiling bench-paper real-music bench-scaling bench-gpu bench-roofline bench-precision bench-song bench-features bench-report clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv, install $(TORCH) then the package (editable, with dev extras)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

browser: ## headless chromium for the gallery test (Debian package; installed when missing)
	@command -v chromium >/dev/null 2>&1 || apt-get install -y -q chromium >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null) || \
		(echo "could not install chromium (needed by the gallery test): apt-get install chromium"; exit 1)

test: install browser ## install, then run every test
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: install ## install, then the tests not marked slow
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: install ## ruff lint + format check
	$(VENV)/bin/ruff check src tests bench data_prep examples docs
	$(VENV)/bin/ruff format --check src tests bench data_prep examples docs

format: install ## ruff format + autofix
	$(VENV)/bin/ruff format src tests bench data_prep examples docs
	$(VENV)/bin/ruff check --fix src tests bench data_prep examples docs

docs: install ## the API pages of the public classes (pdoc) into docs/api/
	$(PY) docs/build_api.py docs/api

toy-data: install ## write the synthetic toy music set to $(DATA)/toy
	$(PY) data_prep/make_toy_dataset.py --out $(DATA)/toy

shards: install ## shards from a music folder at the preset's rate: make shards SRC=dir OUT=dir [META=file] [PRESET=tiny | SR=44100]
	@test -n "$(SRC)" -a -n "$(OUT)" || (echo "usage: make shards SRC=music_dir OUT=shards_dir [META=metadata.csv] [PRESET=tiny | SR=44100]"; exit 2)
	$(CLI) prep --src "$(SRC)" --out "$(OUT)" $(if $(SR),--sr $(SR),--preset $(PRESET)) $(if $(META),--metadata "$(META)")

REAL ?= $(DATA)/real_music
real-music: install ## real game soundtracks from Debian packages (apt-get) -> $(REAL)/ + shards $(REAL)_22k/, $(REAL)_44k/ (~1 min)
	$(PY) data_prep/real_music.py --out $(REAL) $(ARGS)

toy-shards: install ## the toy set as shards in $(DATA)/toy_shards (resumes; nothing to do when complete)
	@test -f $(DATA)/toy/metadata.csv || $(PY) data_prep/make_toy_dataset.py --out $(DATA)/toy
	$(CLI) prep --src $(DATA)/toy/audio --metadata $(DATA)/toy/metadata.csv --out $(DATA)/toy_shards --sr 22050 --val-fraction 0.2 --shard-tracks 8

# The training targets read $(SHARDS): the default, the toy set's shards, is built first when missing (toy-shards
# resumes, and does nothing when complete); any other folder must already hold a finished prep (manifest.json).
ifeq ($(SHARDS),$(DATA)/toy_shards)
TRAIN_SHARDS := toy-shards
else
TRAIN_SHARDS := check-shards
endif

check-shards:
	@test -f "$(SHARDS)/manifest.json" || (echo "$(SHARDS) holds no shards (no manifest.json). Run this first:"; \
		echo "  make shards SRC=<your music folder> OUT=$(SHARDS)"; \
		echo "or leave SHARDS unset to train on the toy set (make toy-shards builds it)."; exit 2)

train-level: install $(TRAIN_SHARDS) ## train one level: make train-level LEVEL=top [STAGE=vqvae|prior; none = both] [PRESET=tiny SHARDS=dir RUN=dir RESUME=1 ARGS="k=v ..."]
ifeq ($(STAGE),)
	$(MAKE) --no-print-directory train-stage STAGE_NAME=vqvae SHARDS_READY=1
	$(MAKE) --no-print-directory train-stage STAGE_NAME=prior SHARDS_READY=1
else
	$(MAKE) --no-print-directory train-stage STAGE_NAME=$(STAGE) SHARDS_READY=1
endif

# One stage; with RESUME=1 a stage that already finished is continued (a no-op at max_steps), one never started
# is started, so `make train-level LEVEL=x RESUME=1` picks up wherever a stop left the pair.
train-stage: install $(if $(SHARDS_READY),,$(TRAIN_SHARDS))
	@if [ -n "$(RESUME)" ] && [ -f "$(RUN)/$(STAGE_NAME)_$(LEVEL)/checkpoints/last.ckpt" ]; then \
		echo "$(CLI) train $(STAGE_NAME) --level $(LEVEL) ... --resume"; \
		$(CLI) train $(STAGE_NAME) --level $(LEVEL) --preset $(PRESET) --data $(SHARDS) --run $(RUN) --resume $(ARGS); \
	else \
		echo "$(CLI) train $(STAGE_NAME) --level $(LEVEL) ..."; \
		$(CLI) train $(STAGE_NAME) --level $(LEVEL) --preset $(PRESET) --data $(SHARDS) --run $(RUN) $(ARGS); \
	fi

DEMO_RUN ?= runs/demo
demo: install toy-shards ## install, toy set + shards, train the tiny preset's 3 VQ-VAE levels and 3 priors, sample a gallery (resumable)
	$(CLI) demo --run $(DEMO_RUN) --data $(DATA)/toy_shards --toy $(DATA)/toy $(ARGS)

sample: install ## sample songs: make sample RUN=dir OUT=dir [SECONDS=10 ARTIST="name" LYRICS=file MODE=ancestral ARGS="..."]
	@test -n "$(OUT)" || (echo "usage: make sample RUN=runs/tiny OUT=samples/x [SECONDS=10 ARTIST=name LYRICS=file]"; exit 2)
	$(CLI) sample --run $(RUN) --out $(OUT) --seconds $(or $(SECONDS),10) --mode $(or $(MODE),ancestral) \
		$(if $(ARTIST),--artist "$(ARTIST)") $(if $(LYRICS),--lyrics "$(LYRICS)") $(ARGS)

TRAIN ?= all
finetune: install ## fine-tune a run's prior on a new artist: make finetune FROM=run SHARDS=dir RUN=new_run [TRAIN=all|embeddings|top-layers:N|lora:R LEVEL=top ARGS="k=v ..."]
	@test -n "$(FROM)" -a -n "$(RUN)" || (echo "usage: make finetune FROM=runs/base SHARDS=shards/new_artist RUN=runs/new [TRAIN=lora:8] [ARGS=\"trainer.max_steps=500\"]"; exit 2)
	$(CLI) finetune --from "$(FROM)" --data "$(SHARDS)" --run "$(RUN)" --level $(LEVEL) --train $(TRAIN) $(ARGS)

# The released models: make import-openai OUT=runs/openai FILES=~/jukebox (vqvae.pth.tar, prior_level_*.pth.tar
# of the 5b_lyrics set there; TOP=5b or 1b_lyrics for another top prior) IDS=~/jukebox-repo/jukebox/data/ids
TOP ?= 5b_lyrics
import-openai: install ## import OpenAI's released files: make import-openai OUT=dir FILES=dir [TOP=5b_lyrics IDS=dir ARGS="--trust-pickle"]
	@test -n "$(OUT)" -a -n "$(FILES)" || (echo "usage: make import-openai OUT=runs/openai FILES=<folder of vqvae.pth.tar, prior_level_{0,1,2}.pth.tar> [TOP=5b_lyrics|5b|1b_lyrics] [IDS=<reference>/jukebox/data/ids]"; exit 2)
	$(CLI) import-openai --out "$(OUT)" --vqvae "$(FILES)/vqvae.pth.tar" --hps vqvae \
		--prior "$(FILES)/prior_level_2.pth.tar" --hps $(TOP) \
		--prior "$(FILES)/prior_level_1.pth.tar" --hps upsampler_level_1 \
		--prior "$(FILES)/prior_level_0.pth.tar" --hps upsampler_level_0 $(if $(IDS),--ids "$(IDS)") $(ARGS)

bench: install ## print measured figures: data-loader throughput, VQ-VAE speed (REFERENCE=checkout to compare)
	$(PY) bench/data_throughput.py
	$(PY) bench/vqvae.py speed $(if $(REFERENCE),--reference $(REFERENCE))

bench-prior: install ## prior training/sampling tokens/s (KV cache, int8, no cache) and memory, tiny + small (~15 min: 3 repeats each)
	$(PY) bench/prior.py $(ARGS)

bench-sampling: install ## seconds of compute per second of sampled audio, per level and per song (~2 min)
	$(PY) bench/sampling.py $(ARGS)

bench-quality: install toy-shards ## tiny VQ-VAE trained on the toy set: spectral convergence and codebook use on held-out songs
	$(PY) bench/vqvae.py quality

bench-finetune: install ## fine-tune the top prior on a toy artist held out of the base run, per --train mode (~20 min)
	$(PY) bench/finetune.py $(ARGS)

bench-conditioning: install ## artist / genre recognition per level and guidance scale over 3 seeds (needs a demo run; ~10 min)
	$(PY) bench/conditioning.py --run $(DEMO_RUN) --toy $(DATA)/toy $(ARGS)

bench-codec-ceiling: install toy-shards ## real toy songs through one VQ-VAE level per training variant: the plain artist check's ceiling (~16 min)
	$(PY) bench/codec_ceiling.py --data $(DATA)/toy_shards --toy $(DATA)/toy $(ARGS)

bench-paper: install ## the paper's VQ-VAE evidence on real music: curves per level, 4 ablations, priors (hours; ARGS="--steps 1000" for less)
	@test -f $(REAL)_22k/manifest.json || $(MAKE) --no-print-directory real-music
	$(PY) bench/paper.py --data $(REAL)_22k --json bench/results/paper.json $(ARGS)

bench-scaling: install toy-shards ## 1 vs 2 processes (DDP) throughput, codebook collectives, FSDP memory plan of the 5B prior (~5 min)
	$(PY) bench/scaling.py $(ARGS)

bench-roofline: install ## batch-1 sampling: bytes per token, memory bandwidth, torch's one-row kernels, vs the measured sampler (~30 s)
	$(PY) bench/roofline.py $(ARGS)

bench-precision: install ## fp32 vs bf16-mixed training curves of a VQ-VAE level and a prior, 200 steps x 4 runs each (~9 min)
	$(PY) bench/precision.py $(ARGS)

bench-song: install ## a three-level song per level, ours (and REFERENCE=checkout's own sampler) side by side (~30 min with REFERENCE)
	$(PY) bench/song.py $(if $(REFERENCE),--reference $(REFERENCE)) $(ARGS)

bench-features: install ## feature extraction: throughput and peak memory against the layers kept, vs the jukemirlib approach; the 5B's memory plan (~6 min)
	$(PY) bench/features.py $(ARGS)

bench-report: install ## render the README's performance tables from bench/results/*.json
	$(PY) bench/report.py --write README.md

bench-gpu: install ## GPU decoding vs the bandwidth roofline, song compute time, bf16 logits, training (ARGS=--dry-run on a CPU)
	$(PY) bench/gpu.py $(ARGS)

clean: ## remove build outputs (keeps .venv and data/)
	rm -rf build *.egg-info src/*.egg-info .pytest_cache .ruff_cache lightning_logs
