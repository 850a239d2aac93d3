# `make test` is the README's test command and the only thing .ci/run calls.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
PYTHON ?= python3

# What the napari/Qt GUI tests need on a headless Debian/Ubuntu machine: a virtual X server
# (Xvfb, xauth for xvfb-run), the libraries Qt's xcb platform plugin and QtGui load (the list
# napari's and pytest-qt's CI notes give), and Mesa's software OpenGL for napari's canvas; and
# mricron-data, whose Colin27 brain (BSD-3) the synthetic training pairs and their tests use; and
# dicom3tools, whose dciodvfy checks the DICOM series the tests write (tests/test_dicom_out.py).
SYSTEM_PACKAGES := mricron-data dicom3tools xvfb xauth x11-utils \
	libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-randr0 libxcb-render-util0 \
	libxcb-xinerama0 libxcb-xinput0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libxkbcommon-x11-0 \
	libegl1 libgl1 libglx-mesa0 libopengl0 libgl1-mesa-dri libdbus-1-3 libglib2.0-0 libfontconfig1

.PHONY: test demo system-packages

# Installed every time (apt-get leaves what is there alone); the package lists are refreshed
# only when an install fails, so a machine that has everything pays a second, not a download.
system-packages:
	@if command -v apt-get >/dev/null 2>&1; then \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null 2>&1 \
		|| { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; }; \
	else \
		echo "make: no apt-get here; install Xvfb and Qt's xcb libraries yourself (see SYSTEM_PACKAGES in the Makefile)"; \
	fi

test: system-packages
	$(PYTHON) -m pip install -q "tox>=4"
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PYTHON) -m tox -e py -- $(PYTEST_ARGS)

demo:
	$(PYTHON) -m pip install -q ".[qt]" && upfusion demo
