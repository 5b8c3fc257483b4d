# The two commands of the README:  `make demo`  and  `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install browser bench clean

$(BIN)/activate:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Debian's Chromium for the Prefect-UI browser test (Playwright drives it; nothing is downloaded).
browser:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

demo: install
	$(BIN)/imgpress demo imgpress-demo

test: install browser
	$(BIN)/python -m pytest -q

# Benchmarks read ../shared/data (not needed by the tests); pngquant is the K-means anchor.
bench: install
	@command -v pngquant >/dev/null || (apt-get update -q && apt-get install -y -q pngquant)
	$(BIN)/python bench/kmeans.py
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/rd_kodak.py

clean:
	rm -rf $(VENV) imgpress-demo bench/out
