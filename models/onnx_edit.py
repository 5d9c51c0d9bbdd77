"""Set-up edits to published ONNX files, so that onnxruntime runs them on batches.

- ``with_free_batch_axis``: YuNet is published for one 640x640 image; its heads reshape to the fixed
  target [1, -1, k]. Reshape's 0 ("copy this dimension") in place of the 1, and free input dimensions,
  let one call take a batch of images of any size that is a multiple of 32.
- ``with_float_weights``: the int8 block-quantised SFace file stores weights behind DequantizeLinear
  nodes with a ``block_size``, which onnxruntime 1.32's CPU kernel refuses ("block_size must be 0 for
  per-tensor"). The weights are folded to float32 once, with onnx's own reference evaluator, so the
  arithmetic is the operator's specification rather than a copy of it written here.
- ``with_cheap_prelu``: onnxruntime's CPU PRelu broadcasts its per-channel slopes element by element and
  leaves the blocked layout its convolutions run in; on SFace it took more than half of the run. The same
  function as depthwise 1x1 convolutions stays in that layout (bench/models.py measures the extractor).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator


def _free_dims(value_info: onnx.ValueInfoProto, names: dict[int, str]) -> None:
    """Make the dimensions at the given positions symbolic, under the given names."""
    for position, name in names.items():
        value_info.type.tensor_type.shape.dim[position].dim_param = name


def with_free_batch_axis(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] not in initializers:
            continue
        target = numpy_helper.to_array(initializers[node.input[1]]).copy()
        if len(target) and target[0] == 1:
            target[0] = 0
            initializers[node.input[1]].CopyFrom(numpy_helper.from_array(target, node.input[1]))
    _free_dims(graph.input[0], {0: "batch", 2: "height", 3: "width"})
    del graph.value_info[:]  # shapes of the one-image graph; onnxruntime infers them again
    for output in graph.output:
        _free_dims(output, {0: "batch", 1: "anchors"})
    return model


def _evaluate_constant(node: onnx.NodeProto, constants: dict[str, np.ndarray], opset: int) -> np.ndarray:
    inputs = [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None) for name in node.input]
    outputs = [onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.UNDEFINED, None)]
    graph = onnx.helper.make_graph([node], "fold", inputs, outputs)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    folded = ReferenceEvaluator(model).run(None, {name: constants[name] for name in node.input})
    assert isinstance(folded, list)  # run() answers a dict only when asked for intermediate results
    value: np.ndarray = folded[0]
    return value


def with_float_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every node computed from initializers alone (dequantisation, then reshapes) becomes a float32
    initializer; graph inputs that are weights stop being inputs, and the batch axis is freed."""
    graph = model.graph
    opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    kept = []
    for node in graph.node:
        if node.input and all(name in constants for name in node.input if name):
            constants[node.output[0]] = _evaluate_constant(node, constants, opset)
        else:
            kept.append(node)
    used = {name for node in kept for name in node.input}
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(
        numpy_helper.from_array(np.asarray(value), name) for name, value in constants.items() if name in used
    )
    # The published file still declares its original weights as graph inputs, which no node reads.
    real_inputs = [value for value in graph.input if value.name not in constants and value.name in used]
    del graph.input[:]
    graph.input.extend(real_inputs)
    _free_dims(graph.input[0], {0: "batch"})
    for output in graph.output:
        _free_dims(output, {0: "batch"})
    return model


def with_cheap_prelu(model: onnx.ModelProto) -> onnx.ModelProto:
    """Each PRelu with per-channel slopes s becomes s*y + (1 - s)*relu(y): two depthwise 1x1 convolutions and
    a Relu, all of which onnxruntime's CPU keeps in its blocked (NCHWc) layout and fuses with the Add."""
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type != "PRelu" or node.input[1] not in initializers:
            nodes.append(node)
            continue
        y, slope_name, out = node.input[0], node.input[1], node.output[0]
        slope = numpy_helper.to_array(initializers[slope_name]).reshape(-1).astype(np.float32)
        channels = len(slope)
        graph.initializer.append(numpy_helper.from_array(slope.reshape(channels, 1, 1, 1), f"{out}_slope"))
        graph.initializer.append(numpy_helper.from_array((1 - slope).reshape(channels, 1, 1, 1), f"{out}_rest"))
        nodes += [
            onnx.helper.make_node("Relu", [y], [f"{out}_relu"]),
            onnx.helper.make_node("Conv", [y, f"{out}_slope"], [f"{out}_sloped"], group=channels, kernel_shape=[1, 1]),
            onnx.helper.make_node(
                "Conv", [f"{out}_relu", f"{out}_rest"], [f"{out}_kept"], group=channels, kernel_shape=[1, 1]
            ),
            onnx.helper.make_node("Add", [f"{out}_sloped", f"{out}_kept"], [out]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model


def sface_for_batches(model: onnx.ModelProto) -> onnx.ModelProto:
    return with_cheap_prelu(with_float_weights(model))


def convert(source: Path, target: Path, edit: Callable[[onnx.ModelProto], onnx.ModelProto]) -> None:
    model = edit(onnx.load(str(source)))
    onnx.checker.check_model(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_suffix(".partial")
    onnx.save(model, str(staged))
    staged.replace(target)
