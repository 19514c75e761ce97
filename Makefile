# The two quick-start commands (README): both set everything up first.
.PHONY: demo test setup

setup:
	@scripts/setup.sh

demo: setup
	.venv/bin/pipeline run --target onnx

test:
	@scripts/setup.sh test
	.venv/bin/python -m pytest -q
