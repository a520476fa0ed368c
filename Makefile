# EdgeQ: the two commands of the README, and a few more.
#   make demo   — the main job: installs what is missing, builds, runs the demo
#   make test   — installs what is missing, builds, runs the whole test suite (what CI runs)
SWIFT ?= swift

.PHONY: setup build release test demo bench-setup clean

setup:
	@bash scripts/setup.sh

build: setup
	$(SWIFT) build

# --static-swift-stdlib: the Swift runtime, Foundation and ICU linked into the binary (lower
# resident memory of `edgeq run`; docs/architecture.md, "Build"). The C libraries stay shared.
release: setup
	$(SWIFT) build -c release --product edgeq --static-swift-stdlib

test: setup
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

demo: release
	.build/release/edgeq demo

# The Python side of the benchmark anchors (onnxruntime, paho, numpy, SB3 + torch:
# several minutes and ~6 GB, once per machine). Not needed by the tests.
bench-setup: setup
	python3 -m venv $(HOME)/.venvs/anchors-perf
	$(HOME)/.venvs/anchors-perf/bin/pip install -q numpy==2.4.6 onnxruntime==1.32.0 onnx==1.23.2 paho-mqtt==2.2.0 threadpoolctl==3.8.0
	$(HOME)/.venvs/anchors-perf/bin/pip install -q torch==2.15.0 stable-baselines3==2.9.2 gymnasium==1.4.0 rl-zoo3==2.9.2

clean:
	rm -rf .build .build-anchors
