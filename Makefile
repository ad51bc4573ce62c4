# make install: create .venv and install the project (no-op when done)
# make test:    run the test suite (what CI runs)
# make test-fast: the suite without the tests marked slow (training, exports, subprocesses)
# make demo:    generate demo CT data, train, test, report
# make report-check: open the demo's report.html in headless Chromium (sort check + report.png)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0

.PHONY: install test test-fast demo report-check clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

demo: install
	$(PY) -m pipeline.synthetic --out data/demo
	$(PY) train.py --config configs/demo.yaml
	$(PY) test.py --run outputs/latest

report-check: install
	$(PY) -m pipeline.evaluate.screenshot outputs/latest/test/report.html --check
