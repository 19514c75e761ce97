# The two quick-start commands (README): both set everything up first.
.PHONY: demo test setup docker-image

setup:
	@scripts/setup.sh

demo: setup
	.venv/bin/pipeline run --target onnx

test:
	@scripts/setup.sh test
	.venv/bin/python -m pytest -q

# The device image, built here without an image registry (scripts/docker_image.sh; ARCH=arm64 for arm64)
docker-image:
	@scripts/docker_image.sh $(ARCH)
