# The two quick-start commands (README): both set everything up first. `make demo` installs no system package
# that only the tests need (sshd, adb, chromium, qemu, the Fashion-MNIST files); `make test` does.
# `scripts/setup.sh --plan [test]` prints what either would install, installing nothing (docs/install.md).
.PHONY: demo test setup docker-image constraints

setup:
	@scripts/setup.sh

demo: setup
	.venv/bin/pipeline run --target onnx

test:
	@scripts/setup.sh test
	.venv/bin/python -m pytest -q --durations=15

# The device image, built here without an image registry (scripts/docker_image.sh; ARCH=arm64 for arm64)
docker-image:
	@scripts/docker_image.sh $(ARCH)

# constraints.txt (the exact tested set) from .venv, after a dependency changed in pyproject.toml and `make test`
# passed: its header is kept, the pins are `pip freeze` without pip and the project, local labels (+cpu) dropped.
constraints:
	@{ sed '/^[^#]/,$$d' constraints.txt; \
	   .venv/bin/pip freeze --all --exclude-editable --exclude pip --exclude zsq-edge | sed -E 's/\+[0-9A-Za-z.]+$$//'; \
	 } > constraints.txt.new
	@mv constraints.txt.new constraints.txt
