# EdgeQ: the two commands of the README, and a few more.
#   make demo   — the main job: installs what is missing, builds, runs the demo
#   make test   — installs what is missing, builds, runs the whole test suite (what CI runs)
#   make install, make deb — the binary, example mappings, deploy files, systemd unit, man page
SWIFT ?= swift

.PHONY: setup build release test demo bench-setup clean install install-files deb

setup:
	@bash scripts/setup.sh

build: setup
	$(SWIFT) build

# --static-swift-stdlib: the Swift runtime, Foundation and ICU linked into the binary (lower
# resident memory of `edgeq run`; docs/architecture.md, "Build"). The C libraries stay shared.
release: setup
	$(SWIFT) build -c release --product edgeq --static-swift-stdlib

# The tests run with OpenBLAS's AVX2 (Haswell) kernels wherever the CPU has AVX2: the kernel
# OpenBLAS picks for a CPU rounds its own way, a learned network moves with the rounding, and the
# learning tests' bounds were measured with the AVX2 kernels (measured on one seed: the heater's
# distilled student agrees with its teacher within the tolerance on 98.6 % of held-out states
# with them, 93.6 % with the AVX-512 ones). Only the tests are pinned, never `edgeq` itself.
# scripts/test.sh sets it, runs the suite and, on a failure, repeats what the suite recorded at
# the end of the log (a CI log keeps only its tail).
test: setup
	$(SWIFT) build --build-tests
	SWIFT="$(SWIFT)" bash scripts/test.sh

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

# ---- Install (docs/operations.md, "Install and run as a service") ----
# make install [PREFIX=/usr/local] [DESTDIR=]: $(PREFIX)/bin/edgeq (the release build, static Swift
# runtime), $(PREFIX)/share/edgeq/{topics,deploy}, $(PREFIX)/lib/systemd/system/edgeq@.service,
# $(PREFIX)/share/man/man1/edgeq.1 (generated from the help by scripts/manpage.py).
# EDGEQ_BIN=PATH installs that binary instead of building the release one (the tests install the
# debug build: it links the toolchain's shared Swift runtime, so it runs only where that is).
PREFIX ?= /usr/local
DESTDIR ?=
EDGEQ_BIN ?=
BINDIR = $(PREFIX)/bin
SHAREDIR = $(PREFIX)/share/edgeq
UNITDIR = $(PREFIX)/lib/systemd/system
MANDIR = $(PREFIX)/share/man/man1
PYTHON ?= python3

ifeq ($(strip $(EDGEQ_BIN)),)
INSTALL_BIN := .build/release/edgeq
INSTALL_DEPS := release
else
INSTALL_BIN := $(EDGEQ_BIN)
INSTALL_DEPS :=
endif

install: $(INSTALL_DEPS)
	@$(MAKE) --no-print-directory install-files EDGEQ_BIN=$(INSTALL_BIN)

# The tree alone, from EDGEQ_BIN, nothing built. The unit's ExecStart points at $(BINDIR)/edgeq.
install-files:
	@test -x "$(EDGEQ_BIN)" || { echo "install: no edgeq binary at '$(EDGEQ_BIN)' (make install builds it; or set EDGEQ_BIN)" >&2; exit 1; }
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SHAREDIR)/topics $(DESTDIR)$(SHAREDIR)/deploy $(DESTDIR)$(UNITDIR) $(DESTDIR)$(MANDIR)
	install -m 0755 $(EDGEQ_BIN) $(DESTDIR)$(BINDIR)/edgeq
	install -m 0644 topics/*.yaml $(DESTDIR)$(SHAREDIR)/topics/
	install -m 0644 $$(find deploy -maxdepth 1 -type f | sort) $(DESTDIR)$(SHAREDIR)/deploy/
	sed 's|/usr/bin/edgeq|$(BINDIR)/edgeq|' deploy/edgeq@.service > $(DESTDIR)$(UNITDIR)/edgeq@.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/edgeq@.service
	$(PYTHON) scripts/manpage.py $(EDGEQ_BIN) > $(DESTDIR)$(MANDIR)/edgeq.1
	chmod 0644 $(DESTDIR)$(MANDIR)/edgeq.1

# make deb: .build/deb/edgeq_VERSION_ARCH.deb, the install tree with PREFIX=/usr, built by dpkg-deb.
# Depends: the shared C libraries the binary links (objdump -p edgeq | grep NEEDED); the Swift
# runtime is inside the release binary. The binary loses its debug sections (strip --strip-debug:
# 106 MB → 84 MB) but keeps its symbols, so crash backtraces still name functions. EDGEQ_BIN as for install; DEB_COMPRESS: dpkg-deb's
# compressor (xz; the tests use none: xz takes minutes on a busy 2-core machine).
DEB_VERSION := $(shell sed -n 's/.*static let string = "\(.*\)".*/\1/p' Sources/edgeq/EdgeQCommand.swift)
DEB_ARCH := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEB_DIR ?= .build/deb
DEB_ROOT = $(DEB_DIR)/root
DEB_FILE = $(DEB_DIR)/edgeq_$(DEB_VERSION)_$(DEB_ARCH).deb
DEB_COMPRESS ?= xz
DEB_DEPENDS = libc6, libgcc-s1, libstdc++6, libmosquitto1, libsqlite3-0, libopenblas0 | libopenblas0-pthread | libopenblas0-openmp | libopenblas0-serial, zlib1g

deb: $(INSTALL_DEPS)
	rm -rf $(DEB_ROOT)
	@$(MAKE) --no-print-directory install-files EDGEQ_BIN=$(INSTALL_BIN) PREFIX=/usr DESTDIR=$(abspath $(DEB_ROOT))
	strip --strip-debug $(DEB_ROOT)/usr/bin/edgeq
	gzip -9n $(DEB_ROOT)/usr/share/man/man1/edgeq.1
	install -d $(DEB_ROOT)/DEBIAN
	sed -e 's/@VERSION@/$(DEB_VERSION)/' -e 's/@ARCH@/$(DEB_ARCH)/' -e 's/@DEPENDS@/$(DEB_DEPENDS)/' \
	    -e "s/@SIZE@/$$(du -sk $(DEB_ROOT)/usr | cut -f1)/" deploy/debian/control.in > $(DEB_ROOT)/DEBIAN/control
	dpkg-deb --root-owner-group -Z$(DEB_COMPRESS) --build $(DEB_ROOT) $(DEB_FILE)
	@echo "deb: $(DEB_FILE)"
