# `make test` is the README's test command and the only thing .ci/run calls.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
PYTHON ?= python3

.PHONY: test demo

test:
	@command -v xvfb-run >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq xvfb libgl1-mesa-dri >/dev/null; }
	$(PYTHON) -m pip install -q "tox>=4"
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PYTHON) -m tox -e py311 -- $(PYTEST_ARGS)

demo:
	$(PYTHON) -m pip install -q . && upfusion demo
