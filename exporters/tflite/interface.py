"""Float edges on a full-integer .tflite: a QUANTIZE op in front of the int8 input, a DEQUANTIZE after the int8 output.

litert-torch in STATIC q/dq mode folds the quantize at the graph input and the
dequantize at the output into the interface, so its models take and return
int8. TFLite's own ``modify_model_interface`` only goes the other way (float →
int8). For callers that want to hand over float pixels and get float logits,
this module edits the flatbuffer: the integer graph is untouched, two standard
ops are added at the edges, and the signature points at the new float tensors.
"""

from __future__ import annotations

from pathlib import Path

from exporters.errors import ExportError


def _opcode_index(model, builtin: int) -> int:
    from ai_edge_litert import schema_py_generated as fb

    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return i
    code = fb.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, fb.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _name(tensor) -> str:
    name = tensor.name
    return name.decode() if isinstance(name, bytes) else str(name)


def _float_twin(subgraph, index: int, name: str) -> int:
    """Append a float32 tensor shaped like ``subgraph.tensors[index]``; return its index."""
    from ai_edge_litert import schema_py_generated as fb

    src = subgraph.tensors[index]
    t = fb.TensorT()
    t.shape = list(src.shape)
    t.shapeSignature = None if src.shapeSignature is None else list(src.shapeSignature)
    t.type = fb.TensorType.FLOAT32
    t.buffer = 0  # the empty buffer: a runtime tensor
    t.name = name
    subgraph.tensors.append(t)
    return len(subgraph.tensors) - 1


def float_interface(src: Path, dst: Path, inputs: bool = True, outputs: bool = True) -> None:
    """Write ``dst``: ``src`` with its int8 inputs/outputs behind QUANTIZE/DEQUANTIZE ops, so the edges are float32."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(src))
    if len(model.subgraphs) != 1:
        raise ExportError(f"float edges are supported on single-subgraph models, {Path(src).name} has {len(model.subgraphs)}")
    sg = model.subgraphs[0]
    int_types = {fb.TensorType.INT8, fb.TensorType.UINT8, fb.TensorType.INT16}
    remap: dict[int, int] = {}
    if inputs:
        for pos, idx in enumerate(list(sg.inputs)):
            if sg.tensors[idx].type not in int_types:
                continue
            new = _float_twin(sg, idx, _name(sg.tensors[idx]) + "_float")
            op = fb.OperatorT()
            op.opcodeIndex = _opcode_index(model, fb.BuiltinOperator.QUANTIZE)
            op.inputs, op.outputs = [new], [idx]
            sg.operators.insert(0, op)
            sg.inputs[pos] = new
            remap[idx] = new
    if outputs:
        for pos, idx in enumerate(list(sg.outputs)):
            if sg.tensors[idx].type not in int_types:
                continue
            new = _float_twin(sg, idx, _name(sg.tensors[idx]) + "_float")
            op = fb.OperatorT()
            op.opcodeIndex = _opcode_index(model, fb.BuiltinOperator.DEQUANTIZE)
            op.inputs, op.outputs = [idx], [new]
            sg.operators.append(op)
            sg.outputs[pos] = new
            remap[idx] = new
    for sig in model.signatureDefs or []:
        for tmap in list(sig.inputs or []) + list(sig.outputs or []):
            tmap.tensorIndex = remap.get(tmap.tensorIndex, tmap.tensorIndex)
    flatbuffer_utils.write_model(model, str(dst))
