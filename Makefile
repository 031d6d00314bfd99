# Targets only forward variables to `python -m medsplit`; all logic lives in the package.
#   make retinopathy CUT=3 CLIENTS=2 [DATA=eyepacs|retinamnist|kaggle|synthetic|PATH] [EPOCHS=..] [DEVICE=cpu|cuda]
#   make unet-seg [CUT=1] [BACKBONE=smp|classic] [DATA=covid-cxr-v7|synthetic|PATH]
#   TRANSPORT=gloo runs the server and each hospital as its own local process (split.transport)
#   make test | make data | make setup | make clean (deletes runs/) | make check-reports
#   make results (reports/results.html + docs/results.md) | make docs (site/) | make index (reports/index.html)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

# Forward a make variable as a config override only when it is set.
ov = $(if $($(1)),$(2)=$($(1)))
COMMON = $(call ov,CUT,split.cut) $(call ov,CLIENTS,split.clients) $(call ov,PROTOCOL,split.protocol) \
         $(call ov,DATA,data.source) $(call ov,EPOCHS,train.epochs) $(call ov,DEVICE,train.device) \
         $(call ov,SEED,train.seed) $(call ov,SIZE,data.img_size) $(call ov,PARTITION,data.partition) \
         $(call ov,ALPHA,data.alpha) $(call ov,BATCH,train.batch_size) $(call ov,LR,train.lr) \
         $(call ov,NAME,output.name)
RETINO = $(COMMON) $(call ov,TARGET,data.target) $(call ov,MODEL,model.name) $(call ov,TRANSPORT,split.transport)
UNET   = $(COMMON) $(call ov,TRANSPORT,split.transport) $(if $(BACKBONE),model.name=unet-$(BACKBONE)) $(call ov,AUG,data.aug_backend)

# Sweeps (TASK=retinopathy|unet). Defaults are sized for a 2-core CPU; widen them on a GPU.
TASK       ?= retinopathy
SEEDS      ?= 0,1,2
PROTOCOLS  ?= sequential,splitfed
PARTITIONS ?= iid
SWEEP_CUTS_retinopathy    = 1,2,3,4,5,6,7
SWEEP_CUTS_unet           = 1,2,3
SWEEP_CLIENTS_retinopathy = 1,2,3,4,6
SWEEP_CLIENTS_unet        = 1,2,3,4,6
JOBS       ?= 1
SWEEP = $(PY) -m medsplit sweep --seeds $(SEEDS) --protocols $(PROTOCOLS) --partitions $(PARTITIONS) --jobs $(JOBS)

.PHONY: attacks setup install-venv lock wheel-check test test-fast retinopathy retinamnist eyepacs unet-seg data clean clean-reports check-reports sweep-cut sweep-clients index results docs

# Set-up is keyed on the *content* of pyproject.toml and requirements.lock (a sha256 kept in
# $(VENV)/.installed), not on file times: a fresh clone whose files are newer than an existing
# venv does not reinstall, and an edited dependency list does.
SETUP_INPUTS = pyproject.toml requirements.lock
setup_hash = $(shell $(PYTHON) -c "import hashlib, sys; print(hashlib.sha256(b''.join(open(f, 'rb').read() for f in sys.argv[1:])).hexdigest())" $(SETUP_INPUTS))

setup:
	@if [ -x $(PY) ] && [ "$$(cat $(VENV)/.installed 2>/dev/null)" = "$(setup_hash)" ]; then \
		echo ">>> $(VENV) matches pyproject.toml and requirements.lock"; \
	else \
		$(MAKE) --no-print-directory install-venv; \
	fi

# pip's own progress is shown: the first set-up downloads PyTorch (with its CUDA libraries on
# Linux) and takes several minutes; the finished .venv is about 6.2 GB (measured: du -sh .venv).
install-venv:
	@echo ">>> creating $(VENV) and installing medsplit with PyTorch, MONAI, scikit-learn and the test tools"
	@echo ">>> first time: several minutes of downloads; the finished $(VENV) is about 6.2 GB on disk"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar on -c requirements.lock -e ".[dev,docs]"
	@echo "$(setup_hash)" > $(VENV)/.installed
	@echo ">>> set-up done; try: make retinopathy or make unet-seg (each wants about 2 GB of RAM), or make test"

# After a dependency change: the exact versions of .venv become the lock (medsplit itself left out).
lock:
	@{ sed -n '/^#/p' requirements.lock; $(PY) -m pip freeze --exclude-editable | grep -v '^#\|^-e\|^medsplit'; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock

# The built wheel installed outside the checkout trains, evaluates and reports (what CI runs).
wheel-check: setup
	PY=$(PY) bash .ci/wheel_check.sh

# Three pytest workers by default (pytest-xdist) on a 2-core machine: the process-level tests
# spend much of their time waiting (for a timeout, a FLARE site, a party's start-up: the two
# timeout tests used 35 s of CPU in 109 s), so a third worker fills the idle time. TEST_WORKERS=0 runs
# everything in one process. The slowest tests are listed at the end.
TEST_WORKERS ?= 3
test: setup
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal --durations=25 $(PYTEST_ARGS)

# The quick tier for day-to-day work: everything not marked slow (no party processes, no FLARE sites).
test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

retinopathy: setup
	$(PY) -m medsplit train configs/retinopathy.yaml $(RETINO) $(ARGS)

retinamnist: setup
	$(PY) -m medsplit train configs/retinamnist.yaml $(RETINO) $(ARGS)

eyepacs: setup
	$(PY) -m medsplit train configs/eyepacs.yaml $(RETINO) $(ARGS)

unet-seg: setup
	$(PY) -m medsplit train configs/unet-seg.yaml $(UNET) $(ARGS)

# A CUT= given to sweep-cut (or PROTOCOL=, SEED=) is rejected with the flag to use instead.
sweep-cut: setup
	$(SWEEP) configs/sweep-cut-$(TASK).yaml --axis cut --values $(or $(VALUES),$(SWEEP_CUTS_$(TASK))) $(COMMON) $(ARGS)

sweep-clients: setup
	$(SWEEP) configs/sweep-clients-$(TASK).yaml --axis clients --values $(or $(VALUES),$(SWEEP_CLIENTS_$(TASK))) $(COMMON) $(ARGS)

index: setup
	$(PY) -m medsplit.report.index reports

# The results leaderboard: every benchmarks/results/*.json as reports/results.html (offline) and
# docs/results.md (the documentation site's page), with published baselines and reproduce commands.
results: setup
	$(PY) -m medsplit.results --html reports/results.html --markdown docs/results.md

# The documentation site (mkdocs-material + mkdocstrings; pip install -e ".[docs]"), built offline
# in strict mode into site/: a broken link or reference fails the build.
docs: setup
	$(PY) -m mkdocs build --strict --site-dir site

data: setup
	$(PY) -m medsplit data

# Run folders hold checkpoints (hundreds of MB each); reports/ keeps the HTML and JSON of every run.
clean:
	rm -rf runs/

clean-reports:
	rm -f reports/*.html reports/*.json

# Open every report in headless Chromium at 1400 px: no sideways scrolling, no broken images,
# nothing fetched from the network; full-page screenshots go to reports/screenshots/ (git-ignored).
check-reports: setup
	$(PY) -m medsplit.report.browser_check $(REPORTS)

# TASK has a default for the sweeps; attacks forward it only when the user set it (the
# attack CLI's default task is lungs), and accept the sweeps' name `unet` for lungs.
ATTACK_TASK = $(if $(filter command line environment,$(origin TASK)),$(patsubst unet,lungs,$(TASK)))

attacks: setup
	$(PY) -m medsplit attack $(if $(PROFILE),--profile $(PROFILE)) $(if $(ATTACK_TASK),--task $(ATTACK_TASK)) $(if $(DEVICE),--device $(DEVICE)) $(ARGS)

# NVIDIA FLARE (optional extra: pip install -e ".[flare]"). The server and each hospital are FLARE
# sites; FLARE's start scripts call `python3`, so the venv's bin leads PATH.
#   make flare-sim [FLARE_CONFIG=configs/unet-seg.yaml] [SITES=hospital-a,hospital-b] [CLIENTS=2 ...]
#   make flare-poc ...   (POC mode: provision, start server + one process per hospital, submit, wait, report, stop)
FLARE_CONFIG ?= configs/retinopathy.yaml
FLARE_OUT    ?= reports/flare
FLARE = PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m medsplit flare

.PHONY: flare-sim flare-poc
flare-sim: setup
	$(FLARE) simulate $(FLARE_CONFIG) $(RETINO) --out $(FLARE_OUT)/sim $(if $(SITES),--sites $(SITES)) $(ARGS)

flare-poc: setup
	$(FLARE) poc $(FLARE_CONFIG) $(RETINO) --out $(FLARE_OUT)/poc $(if $(SITES),--sites $(SITES)) $(ARGS)
