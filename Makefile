# veil: every target CI calls lives here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: setup models test test-unit system demo lint sample clean triton-env deface-env eval golden sweep \
	protos protos-check \
	bench bench-batch deploy-check fuzz lock audit

# Installs exactly requirements.lock into a clean venv: a pinned pip, then the project with
# every package constrained to its locked version (the build backend is pinned exactly in
# pyproject.toml's [build-system]). tests/test_packaging.py fails when .venv, the lock and
# pyproject.toml disagree. `make lock` refreshes the lock on purpose.
PIP_VERSION := 26.3
DEV_EXTRAS := server,local,triton,cluster,dev

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv --clear $(VENV)
	$(PIP) install --quiet pip==$(PIP_VERSION)
	$(PIP) install --quiet -c requirements.lock -e '.[$(DEV_EXTRAS)]'
	touch $@

setup: $(VENV)/.installed

# The defaults, plus SCRFD, which the tests exercise. SCRFD is opt-in: its weights are licensed
# for non-commercial research use only (README, "Models and licences"); `veil models fetch`
# alone, as the containers run it, fetches only the defaults.
models: setup
	$(VENV)/bin/veil models fetch
	$(VENV)/bin/veil models fetch --model scrfd

# Everything is installed here, so nothing may skip (tests/conftest.py: VEIL_TEST_NO_SKIPS).
test: setup models triton-env system
	VEIL_TEST_NO_SKIPS=1 $(PY) -m pytest

# The contributors' fast tier: no root, no Triton, no browser, no weights download. It runs
# with an empty model folder, so a test that needs weights without saying so fails here.
test-unit: setup
	tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	VEIL_MODEL_DIR=$$tmp $(PY) -m pytest -m "not slow and not triton and not weights and not system"

# Debian packages the tests use for real (Chromium for the review report, Prometheus and
# promtool for deploy/): installed only when missing. Needs root (as on CI).
system:
	bash .ci/setup-system.sh

# The README's first command: set up, fetch the weights, anonymise the bundled sample.
demo: setup models
	mkdir -p out
	$(VENV)/bin/veil anonymize samples/astronaut.mp4 -o out/astronaut.mp4 --overwrite

# The Triton server (nvidia-pytriton's bundled tritonserver + python backend) in its own venv:
# it needs numpy<2, the project venv has numpy 2. See docs/triton.md.
TRITON_VENV := .triton-venv

$(TRITON_VENV)/.installed: deploy/triton/requirements.txt
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install --quiet --upgrade pip
	$(TRITON_VENV)/bin/pip install --quiet -r deploy/triton/requirements.txt
	touch $@

triton-env: $(TRITON_VENV)/.installed

LINTED := client server tests benchmarks samples deploy

# mypy checks the package as it is installed (client/ is veil, server/ is veil.server, protos/veil/v1
# is veil.v1) through a tree of links, so calls between packages are checked, not taken as Any.
TYPECHECK := .cache/typecheck

lint: setup
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/veil && \
	for entry in client/*; do ln -s ../../../$$entry $(TYPECHECK)/veil/; done && \
	ln -s ../../../server $(TYPECHECK)/veil/server && \
	ln -s ../../../protos/veil/v1 $(TYPECHECK)/veil/v1 && \
	cd $(TYPECHECK) && ../../$(VENV)/bin/mypy --config-file ../../pyproject.toml -p veil

clean:
	rm -rf $(VENV) $(TRITON_VENV) $(DEFACE_VENV) $(AUDIT_VENV) build *.egg-info .cache

# deface (the open-source peer) in its own venv: `benchmarks/eval.py --compare-deface` runs it
# on the same clips and scores its output by pixels. Pinned to the version docs/quality.md reports.
DEFACE_VENV := .deface-venv

$(DEFACE_VENV)/.installed:
	$(PYTHON) -m venv $(DEFACE_VENV)
	$(DEFACE_VENV)/bin/pip install --quiet --upgrade pip
	$(DEFACE_VENV)/bin/pip install --quiet deface==1.5.0 onnxruntime
	touch $@

deface-env: $(DEFACE_VENV)/.installed

# The evaluation harness (benchmarks/veil_eval, not part of the product): public GT clips +
# generated hard clips + stills, side by side with deface. EVAL_ARGS adds options, e.g.
# `make eval EVAL_ARGS="--preset thorough --json"`.
EVAL_CLIPS ?= ../shared/data/clips
EVAL_ARGS ?=

eval: setup deface-env golden
	$(PY) benchmarks/eval.py --clips $(EVAL_CLIPS) --generated --stills --all-presets --compare-deface $(EVAL_ARGS)

# tests/golden/eval_public.json: the presets' scores on the public GT clips (by record), which
# tests/test_eval.py holds later runs to. `make eval` regenerates it too.
golden: setup models
	$(PY) benchmarks/golden_eval.py

# The leak-vs-cost sweep the presets are picked from (docs/quality.md, docs/pareto.png).
sweep: setup models
	$(PY) benchmarks/sweep_presets.py --png docs/pareto.png


# gRPC contract: generated *_pb2.py, *_pb2_grpc.py and *.pyi are committed beside the protos;
# protos-check regenerates into a temp dir and fails on any difference (CI runs it).
PROTOC := $(PY) -m grpc_tools.protoc -Iprotos

protos: setup
	$(PROTOC) --python_out=protos --grpc_python_out=protos --pyi_out=protos protos/veil/v1/*.proto

protos-check: setup
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	$(PROTOC) --python_out=$$tmp --grpc_python_out=$$tmp --pyi_out=$$tmp protos/veil/v1/*.proto && \
	for f in $$tmp/veil/v1/*; do \
		diff -u protos/veil/v1/$$(basename $$f) $$f || { echo "protos drifted: run make protos"; exit 1; }; \
	done && echo "protos up to date"


# The README's sample clip (samples/astronaut.mp4, committed): rebuild it deterministically from
# the public-domain NASA photo in the scikit-image wheel (fetched into .cache/). See samples/README.md.
sample: setup
	$(PY) samples/make_sample.py

# Throughput (docs/throughput.md): veil per preset against a plain decode+encode with the same
# encoder settings (the ceiling), decode alone and deface 1.5.0, on the same generated GT clips
# (720p, 1080p; made into .cache/bench/), in one run, with leak rate and PSNR outside the faces.
# BENCH_ARGS adds options, e.g. `make bench BENCH_ARGS="--rss --seconds 10"`.
BENCH_ARGS ?=

bench: setup models deface-env
	$(PY) benchmarks/bench_throughput.py $(BENCH_ARGS)

# Batches (issue 16): 8 short clips one at a time, two at once, and on a local Dask cluster of
# two workers; ratios in docs/throughput.md.
bench-batch: setup models
	$(PY) benchmarks/bench_batch.py


# deploy/ checked without Docker or a cluster: promtool (scrape configs, rules, rule unit tests
# firing every alert), then tests/test_deploy_*.py (Kubernetes schemas, compose-spec schema,
# hadolint, COPY paths, dashboard metric names) and tests/test_prometheus.py (a real
# Prometheus scraping a real `veil serve`). promtool: Debian's prometheus (.ci/setup-system.sh).
deploy-check: setup
	promtool check config --syntax-only deploy/prometheus/prometheus.yml deploy/prometheus/prometheus-kubernetes.yml
	promtool check rules deploy/prometheus/rules/veil.rules.yml
	cd deploy/prometheus/tests && promtool test rules veil.rules.test.yml
	$(PY) -m pytest -q tests/test_deploy_*.py tests/test_prometheus.py


# Hardening (issue 9). `make fuzz`: the record-parser and RPC-validation fuzzers for longer
# (FUZZ_EXAMPLES per property; CI runs the tests' short default inside `make test`).
FUZZ_EXAMPLES ?= 2000

fuzz: setup models
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -p no:cacheprovider tests/test_fuzz.py tests/test_service_fuzz_*.py

# requirements.lock: every package of the development install at the newest versions the
# index has today, resolved in a scratch venv (veil itself, pip and setuptools excluded).
# Run it on purpose, then `make setup` installs the new lock and `make test` checks it.
LOCK_VENV := .cache/lock-venv

lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet pip==$(PIP_VERSION)
	$(LOCK_VENV)/bin/pip install --quiet -e '.[$(DEV_EXTRAS)]'
	$(LOCK_VENV)/bin/pip freeze --exclude-editable | LC_ALL=C sort -f > requirements.lock
	rm -rf $(LOCK_VENV)

# pip-audit over requirements.lock, in its own venv. --strict: a package the vulnerability
# service does not know fails the audit instead of being skipped silently. Needs PyPI's
# per-version JSON API (https://pypi.org/pypi/NAME/VERSION/json) or OSV (AUDIT_SERVICE=osv).
AUDIT_VENV := .audit-venv
AUDIT_SERVICE ?= pypi

$(AUDIT_VENV)/.installed:
	$(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/pip install --quiet pip-audit
	touch $@

audit: $(AUDIT_VENV)/.installed
	$(AUDIT_VENV)/bin/pip-audit --strict --no-deps --disable-pip --progress-spinner off \
		--vulnerability-service $(AUDIT_SERVICE) -r requirements.lock
