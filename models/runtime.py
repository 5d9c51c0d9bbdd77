"""Running a network on a batch: onnxruntime for serving, torch for conversion checks and benchmarks.

Both runners take a float32 NCHW batch of RGB pixels (0..255) and return the network's outputs as a
tuple of numpy arrays, in the order the network declares them.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort


class Runner(Protocol):
    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, ...]: ...


CUDA_OPTIONS = {
    # cuDNN's exhaustive algorithm search (onnxruntime's default) times every candidate for each new input
    # shape. On an H200 the kernels it picked for MTCNN ran no faster than the heuristic's, while a change of
    # shape cost 46 ms instead of 10.
    "cudnn_conv_algo_search": "HEURISTIC",
}


def providers_for(device: str) -> list[Any]:
    """onnxruntime execution providers for ``auto``, ``cpu`` or ``cuda``.

    ``auto`` takes CUDA only when the installed onnxruntime build has its CUDA provider (the
    onnxruntime-gpu wheel); ``cuda`` insists on it and fails clearly otherwise.
    """
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        _load_cuda_libraries()
        return [("CUDAExecutionProvider", CUDA_OPTIONS), "CPUExecutionProvider"]
    if device == "cuda":
        raise RuntimeError(
            f"device=cuda, but this onnxruntime has no CUDA provider (available: {available}); install onnxruntime-gpu"
        )
    return ["CPUExecutionProvider"]


@functools.cache
def _load_cuda_libraries() -> None:
    """Loads CUDA and cuDNN from the pip-installed nvidia packages (torch's), so the CUDA provider finds
    them without LD_LIBRARY_PATH; harmless for libraries already loaded or installed system-wide."""
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()


# How many input shapes a model keeps a CUDA session for, least recently used dropped first: a camera's
# frames need about 40 for P-Net (pyramid levels x padded batch sizes); each holds its own GPU memory.
CUDA_SHAPES_PER_MODEL = 64
# Calls of one shape before it gets its own session, and how many shapes' calls are counted.
SHAPE_SESSION_AFTER = 3
SHAPES_COUNTED = 4096


class OnnxRunner:
    """An onnxruntime session; reads its input name and output order from the model itself.

    On the CUDA provider the runner also keeps one session per recurring input shape. onnxruntime's CUDA
    convolutions set themselves up again whenever their input shape differs from the previous run's,
    which costs about 10 ms per call on an H200, far more than MTCNN's networks take to run, and MTCNN
    changes shape on nearly every call (pyramid levels, crop counts). A session that only ever sees one
    shape never sets up again. To make shapes recur, batch sizes are padded to a power of two where the
    model's batch axis is free (samples are independent, so the results are the same), and the detector
    pads P-Net's pyramid levels. A shape gets its own session once it has come ``SHAPE_SESSION_AFTER``
    times (a camera: from its third frame on), and until then runs on the shared session.
    """

    def __init__(
        self,
        path: Path,
        device: str = "auto",
        num_threads: int = 0,
        spin_wait: bool = True,
        fixed_shapes: bool | None = None,
    ):
        self.path = Path(path)
        self._options = ort.SessionOptions()
        self._options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not spin_wait:
            self._options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if num_threads:
            self._options.intra_op_num_threads = num_threads
            self._options.inter_op_num_threads = 1
        self._providers = providers_for(device)
        self.session = self._new_session()
        if device == "cuda" and self.provider != "CUDAExecutionProvider":
            # onnxruntime falls back to the CPU, with only a log line, when the CUDA libraries don't load.
            raise RuntimeError(
                f"device=cuda, but onnxruntime could not start its CUDA provider for {path} "
                "(are CUDA 13 and cuDNN 9 installed? onnxruntime.preload_dlls() says which is missing)"
            )
        first_input = self.session.get_inputs()[0]
        self.input_name = first_input.name
        self.input_shape = tuple(first_input.shape)
        self.output_names = [output.name for output in self.session.get_outputs()]
        self.fixed_shapes = self.provider == "CUDAExecutionProvider" if fixed_shapes is None else fixed_shapes
        self._batch_axis_is_free = len(self.input_shape) > 0 and not isinstance(self.input_shape[0], int)
        self._by_shape: OrderedDict[tuple[int, ...], ort.InferenceSession] = OrderedDict()
        self._calls_by_shape: OrderedDict[tuple[int, ...], int] = OrderedDict()
        self._lock = threading.Lock()

    def _new_session(self) -> ort.InferenceSession:
        return ort.InferenceSession(str(self.path), sess_options=self._options, providers=self._providers)

    @property
    def provider(self) -> str:
        return str(self.session.get_providers()[0])

    @property
    def held_shapes(self) -> list[tuple[int, ...]]:
        """The input shapes this runner keeps a session for, least recently used first."""
        with self._lock:
            return list(self._by_shape)

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        batch = np.ascontiguousarray(batch)
        if not self.fixed_shapes or len(batch) == 0:
            return tuple(self.session.run(self.output_names, {self.input_name: batch}))
        count = len(batch)
        padded = 1 << (count - 1).bit_length() if self._batch_axis_is_free else count
        if padded != count:
            batch = np.concatenate([batch, np.zeros((padded - count, *batch.shape[1:]), batch.dtype)])
        outputs = self._session_for(batch.shape).run(self.output_names, {self.input_name: batch})
        # Only padded rows are cut; outputs without a batch axis (SCRFD's, for one) are left whole.
        return tuple(
            output[:count] if padded != count and output.shape[:1] == (padded,) else output for output in outputs
        )

    def _session_for(self, shape: tuple[int, ...]) -> ort.InferenceSession:
        with self._lock:
            session = self._by_shape.get(shape)
            if session is not None:
                self._by_shape.move_to_end(shape)
                return session
            calls = self._calls_by_shape.pop(shape, 0) + 1
            self._calls_by_shape[shape] = calls
            if len(self._calls_by_shape) > SHAPES_COUNTED:
                self._calls_by_shape.popitem(last=False)
            if calls < SHAPE_SESSION_AFTER:
                return self.session
        session = self._new_session()  # outside the lock: other shapes' calls go on meanwhile
        with self._lock:
            session = self._by_shape.setdefault(shape, session)
            self._calls_by_shape.pop(shape, None)
            while len(self._by_shape) > CUDA_SHAPES_PER_MODEL:
                self._by_shape.popitem(last=False)
        return session


class TorchRunner:
    """Runs a torch module the same way, for checks against its exported graph and for benchmarks."""

    def __init__(self, module: Any) -> None:  # a torch.nn.Module
        import torch

        self._torch = torch
        self.module = module.eval()

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        with self._torch.inference_mode():
            outputs = self.module(self._torch.from_numpy(np.ascontiguousarray(batch)))
        if not isinstance(outputs, tuple):
            outputs = (outputs,)
        return tuple(output.numpy() for output in outputs)
