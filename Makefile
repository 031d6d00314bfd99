# Targets only forward variables to `python -m medsplit`; all logic lives in the package.
#   make retinopathy CUT=3 CLIENTS=2 [DATA=eyepacs|retinamnist|kaggle|synthetic|PATH] [EPOCHS=..] [DEVICE=cpu|cuda]
#   make unet-seg [CUT=1] [BACKBONE=smp|classic] [DATA=covid-cxr-v7|synthetic|PATH]
#   make test | make data | make setup

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
RETINO = $(COMMON) $(call ov,TARGET,data.target) $(call ov,MODEL,model.name)
UNET   = $(COMMON) $(if $(BACKBONE),model.name=unet-$(BACKBONE)) $(call ov,AUG,data.aug_backend)

.PHONY: setup test retinopathy retinamnist eyepacs unet-seg data clean-reports

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

test: setup
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

retinopathy: setup
	$(PY) -m medsplit train configs/retinopathy.yaml $(RETINO) $(ARGS)

retinamnist: setup
	$(PY) -m medsplit train configs/retinamnist.yaml $(RETINO) $(ARGS)

eyepacs: setup
	$(PY) -m medsplit train configs/eyepacs.yaml $(RETINO) $(ARGS)

unet-seg: setup
	$(PY) -m medsplit train configs/unet-seg.yaml $(UNET) $(ARGS)

data: setup
	$(PY) -m medsplit data

clean-reports:
	rm -f reports/*.html reports/*.json
