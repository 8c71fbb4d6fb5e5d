# make run   set everything up and start the platform on http://127.0.0.1:8000
# make test  set everything up and run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
WEB_SOURCES := $(shell find web -path web/node_modules -prune -o -path web/dist -prune -o -type f -print 2>/dev/null)

.PHONY: run test venv web buf protos lint clean bench bench-upload bench-ops wheels image

run: venv web
	$(BIN)/python -m tools.launcher

test: venv web buf
	$(BIN)/python -m pytest $(PYTEST_ARGS)

venv: $(STAMP)
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The web UI (web/dist), rebuilt when its sources change; skipped while there is no web/ folder.
web: web/dist/index.html
web/dist/index.html: $(WEB_SOURCES)
	@if [ -f web/package.json ]; then cd web && npm ci --no-audit --no-fund && npm run build; fi

# buf CLI (npm package @bufbuild/buf) for linting the protos.
buf: tools/buf/node_modules/.bin/buf
tools/buf/node_modules/.bin/buf: tools/buf/package.json
	cd tools/buf && npm install --no-audit --no-fund --silent
	touch $@

# Regenerate the Python stubs after editing protos/ (tests/test_protos.py fails while they are stale).
protos: venv
	$(BIN)/python tools/gen_protos.py

lint: venv buf
	$(BIN)/ruff check .
	tools/buf/node_modules/.bin/buf lint

clean:
	rm -rf $(VENV) web/node_modules web/dist tools/buf/node_modules

# End-to-end throughput/latency benchmark (starts its own platform on free loopback ports; see
# bench/README.md). Extra flags: make bench BENCH_ARGS="-n 100 --rounds 1".
bench: venv
	$(BIN)/python bench/throughput.py $(BENCH_ARGS)

# One 2 GiB upload and download through gateway and storage: MiB/s and peak memory growth.
bench-upload: venv
	$(BIN)/python bench/upload_memory.py $(BENCH_ARGS)

# Each 3D operation on a 256^3 float32 volume: time against its scipy/scikit-image call, peak memory.
# Quick mode: make bench-ops BENCH_ARGS="--size 96".
bench-ops: venv
	$(BIN)/python bench/operations_3d.py $(BENCH_ARGS)

# A wheel of every runtime dependency in wheelhouse/, for the image's Python (3.11, manylinux, this
# machine's architecture), so that `docker build` installs with `pip --no-index` (air-gapped builds).
# WHEELS_EXTRA adds requirements (the CI's S3 stand-in image uses WHEELS_EXTRA='moto[server]==...').
WHEEL_ARCH ?= $(shell uname -m)
WHEELHOUSE ?= wheelhouse
# Debian bookworm has glibc 2.36: every manylinux wheel up to manylinux_2_36 runs there.
WHEEL_PLATFORMS ?= manylinux1 manylinux2010 manylinux2014 $(foreach v,$(shell seq 5 36),manylinux_2_$(v))
wheels: venv
	mkdir -p $(WHEELHOUSE)
	$(BIN)/python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > $(WHEELHOUSE)/requirements.txt
	$(BIN)/python -m pip download --quiet --dest $(WHEELHOUSE) --only-binary=:all: \
	  --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
	  $(foreach p,$(WHEEL_PLATFORMS),--platform $(p)_$(WHEEL_ARCH)) \
	  --platform any -r $(WHEELHOUSE)/requirements.txt $(WHEELS_EXTRA)
	@ls $(WHEELHOUSE)/*.whl | wc -l | xargs echo "wheels in $(WHEELHOUSE)/:"

# The container image, built offline from wheelhouse/ and web/dist (docs/deploy.md).
IMAGE ?= radiology:latest
CONTAINER ?= $(shell command -v docker >/dev/null 2>&1 && echo docker || echo podman)
image: wheels web
	$(CONTAINER) build --build-arg WEB_FROM=web-prebuilt $(IMAGE_BUILD_ARGS) -t $(IMAGE) .
