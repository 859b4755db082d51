# snnc: `make demo` and `make test` set everything up first (idempotent; quick when nothing changed).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.snnc-installed
FMNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_DIR := out/demo

.PHONY: setup demo test clean data bench-deps bench-accuracy

setup: $(STAMP) $(FMNIST)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-install only when the project's declared dependencies change.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# Fashion-MNIST ships as a Debian package (IDX files under /usr/share/datasets).
$(FMNIST):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq dataset-fashion-mnist

DATA := .data/fashion_mnist/test.npz
data: $(DATA)
$(DATA): examples/fashion_mnist/data.py | setup
	$(PY) examples/fashion_mnist/data.py .data/fashion_mnist --calib 1024 --test 2000

demo: data
	$(VENV)/bin/snnc convert examples/fashion_mnist/models/vgg_bn.onnx --timesteps 32 \
		--calib .data/fashion_mnist/calib.npz -o $(DEMO_DIR)/vgg_bn.snn --report $(DEMO_DIR)/vgg_bn.report.json
	$(VENV)/bin/snnc eval $(DEMO_DIR)/vgg_bn.snn --data .data/fashion_mnist/test.npz --timesteps 8,16,32

test: setup
	$(PY) -m pytest -q

# SpikingJelly 2.0 for the side-by-side benchmark: --no-deps, because its declared
# requirements (torchaudio, torchvision, ...) would replace the pinned torch.
bench-deps: setup
	$(PY) -m pip install -q --no-deps spikingjelly==2.0.0
	$(PY) -m pip install -q tqdm loguru h5py requests

bench-accuracy: bench-deps data
	$(PY) benchmarks/accuracy/fashion_mnist.py
	$(PY) benchmarks/accuracy/ablation.py

clean:
	rm -rf $(VENV) .data out .pytest_cache
