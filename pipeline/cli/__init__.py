"""``pipeline``: checkpoint in, verified integer artifacts and a report out, without the training data.

    pipeline run                                   # bundled Fashion-MNIST ResNet-20, ONNX target
    pipeline run --model mynet.py:build --weights mynet.pt --input-shape 3,32,32 --bits w4a4 --out runs/mynet
    pipeline run --config zsq.yaml --set qat.steps=2000
    pipeline qat --out runs/x                      # run the stages up to qat (cached ones are skipped)
    pipeline run --from qat                        # redo from a stage
    pipeline report runs/x                         # print a run's summary, write runs/x/report.html
    pipeline report runs/a runs/b --html cmp.html  # compare runs in one page
    pipeline models                                # the model zoo
    pipeline bench --artifact runs/x/model.w8a8.onnx --device pi5    # the bench protocol on a device
    pipeline run --device local                    # ... and bench every artifact of the run there
    pipeline devices list|check                    # the devices file (devices.yaml) and whether each is reachable
"""


from __future__ import annotations

import sys


# The host side's top-level modules (pyproject.toml's `host` extra). A device-side install (`pip install zsq-edge`:
# numpy and the integer runtimes, no torch) has none of them, and building the parser already imports torch.
HOST_MODULES = ("torch", "onnx", "onnxscript", "yaml", "PIL", "jsonschema", "litert_torch", "torchao")


def missing_host_modules() -> list[str]:
    """The host-side modules this Python cannot find (all of them on a device-side install); found, not imported."""
    import importlib.util

    return [m for m in HOST_MODULES if importlib.util.find_spec(m) is None]


def build_parser():
    from pipeline.cli.parser import build_parser as build

    return build()


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import exits, output

    missing = missing_host_modules()
    if missing:
        print(f"error: this is the device side of zsq-edge (no {', '.join(missing)}); `pipeline` needs the host side: "
              'pip install -c constraints.txt ".[host]" in a zsq-edge checkout (docs/install.md). '
              "On a device, the bench agent is python -m devices.agent", file=sys.stderr)
        return exits.INPUT
    args = build_parser().parse_args(argv)
    output.configure(args)
    try:
        return args.func(args)
    except (Exception, KeyboardInterrupt) as exc:
        return exits.handle(exc)


if __name__ == "__main__":
    sys.exit(main())
