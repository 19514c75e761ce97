"""Float edges on a full-integer .tflite: a QUANTIZE op in front of the int8 input, a DEQUANTIZE after the int8 output
(:func:`float_interface`), and the reverse (:func:`int8_interface`).

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


def int8_interface(src: Path, dst: Path) -> None:
    """Write ``dst``: ``src`` with the QUANTIZE after each float input and the DEQUANTIZE before each float output
    removed, so the edges are the int8 tensors those ops connect (the reverse of :func:`float_interface`).

    What the converter does itself in its default mode; in strict q/dq mode (float layers,
    ``exporters.tflite.export._strict_qdq``) it keeps the float edges, so this does it on the flatbuffer. The scales
    and zero points of the new edges are those of the removed ops: nothing is recomputed.
    """
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(src))
    if len(model.subgraphs) != 1:
        raise ExportError(f"int8 edges are supported on single-subgraph models, {Path(src).name} has {len(model.subgraphs)}")
    sg = model.subgraphs[0]
    code = {i: max(c.builtinCode, c.deprecatedBuiltinCode) for i, c in enumerate(model.operatorCodes)}
    int_types = {fb.TensorType.INT8, fb.TensorType.UINT8}
    readers: dict[int, list] = {}
    for op in sg.operators:
        for t in op.inputs if op.inputs is not None else []:
            readers.setdefault(int(t), []).append(op)
    remap: dict[int, int] = {}
    drop = []
    for pos, idx in enumerate(list(sg.inputs)):
        ops = readers.get(int(idx), [])
        if len(ops) != 1 or code[ops[0].opcodeIndex] != fb.BuiltinOperator.QUANTIZE or sg.tensors[ops[0].outputs[0]].type not in int_types:
            raise ExportError(f"{Path(dst).name}: input {_name(sg.tensors[idx])!r} does not go straight into one QUANTIZE: cannot give "
                              "the model an int8 input (use --set export.tflite_io=float)")
        sg.inputs[pos] = remap[int(idx)] = int(ops[0].outputs[0])
        drop.append(ops[0])
    for pos, idx in enumerate(list(sg.outputs)):
        op = next((o for o in sg.operators if o.outputs is not None and int(idx) in [int(t) for t in o.outputs]), None)
        if op is None or code[op.opcodeIndex] != fb.BuiltinOperator.DEQUANTIZE or sg.tensors[op.inputs[0]].type not in int_types \
                or len(readers.get(int(idx), [])) > 0:
            raise ExportError(f"{Path(dst).name}: output {_name(sg.tensors[idx])!r} is not one DEQUANTIZE of an int8 tensor: cannot "
                              "give the model an int8 output (use --set export.tflite_io=float)")
        sg.outputs[pos] = remap[int(idx)] = int(op.inputs[0])
        drop.append(op)
    sg.operators = [op for op in sg.operators if not any(op is d for d in drop)]
    for sig in model.signatureDefs or []:
        for tmap in list(sig.inputs or []) + list(sig.outputs or []):
            tmap.tensorIndex = remap.get(tmap.tensorIndex, tmap.tensorIndex)
    flatbuffer_utils.write_model(model, str(dst))
