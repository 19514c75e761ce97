"""LiteRT's CompiledModel API for the accelerators the interpreter cannot reach: ``litert:gpu`` and ``litert:npu``.

The interpreter (:mod:`runtimes.litert_backend`) runs ``xnnpack`` and ``none``; LiteRT 2's GPU
(WebGPU/OpenCL) and NPU (vendor dispatch) accelerators are compiled through
``ai_edge_litert.compiled_model.CompiledModel`` instead. The model is compiled for the accelerator
*alone* (:func:`runtimes.accelerators.compile_litert`): either it takes the whole graph, or loading
fails with LiteRT's reason; a silent fallback to the CPU would check the CPU under the GPU's name.
The edges (names, NHWC layout, int8 scale and zero point) are read by the interpreter, as for the
other LiteRT predictor, so ``runtimes.run_single`` treats both alike. The batch stays at 1, as converted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class CompiledPredictor:
    runtime = "litert"

    def __init__(self, path: Path, threads: int = 1, accelerator: str = "gpu") -> None:
        from runtimes.accelerators import compile_litert
        from runtimes.litert_backend import LiteRTPredictor, version

        edges = LiteRTPredictor(path, threads=threads, use_xnnpack=False)  # the edges as the interpreter reads them
        self.path, self.threads, self.inputs, self.outputs = edges.path, threads, edges.inputs, edges.outputs
        self.model = compile_litert(self.path, accelerator, threads)
        sigs = self.model.get_signature_list()
        self.signature = "serving_default" if "serving_default" in sigs else next(iter(sigs))
        self._index = self.model.get_signature_index(self.signature)
        self._in_names, self._out_names = list(sigs[self.signature]["inputs"]), list(sigs[self.signature]["outputs"])
        self._in = self.model.create_input_buffers(self._index)
        self._out = self.model.create_output_buffers(self._index)
        self.accelerator = f"litert:{accelerator}"
        self.executes_on = [f"LiteRT {accelerator.upper()} accelerator (whole graph)"]
        self.version = version()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        by_name = {s.name: s for s in self.inputs}
        for name, buf in zip(self._in_names, self._in):
            spec = by_name.get(name, self.inputs[0])
            if spec.name not in feeds:
                raise KeyError(f"missing input {spec.name!r}; {self.path.name} takes {', '.join(s.name for s in self.inputs)}")
            buf.write(np.ascontiguousarray(feeds[spec.name], dtype=spec.dtype))
        self.model.run_by_index(self._index, self._in, self._out)
        outs = {s.name: s for s in self.outputs}
        result = {}
        for name, buf in zip(self._out_names, self._out):
            spec = outs.get(name, self.outputs[0])
            shape = tuple(int(d) for d in spec.shape)
            result[spec.name] = buf.read(int(np.prod(shape)), np.dtype(spec.dtype)).reshape(shape)
        return result

    def kernels(self) -> dict[str, object]:
        """What LiteRT says: the accelerator and whether it took the whole graph (it must, as compiled here)."""
        return {"reported_by": "LiteRT CompiledModel", "fully_accelerated": bool(self.model.is_fully_accelerated()),
                "accelerator": self.accelerator, "executes_on": self.executes_on}
