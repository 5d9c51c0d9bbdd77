"""Running a network on a batch: onnxruntime for serving, torch for conversion checks and benchmarks.

Both runners take a float32 NCHW batch of RGB pixels (0..255) and return the network's outputs as a
tuple of numpy arrays, in the order the network declares them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort


class Runner(Protocol):
    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, ...]: ...


def providers_for(device: str) -> list[str]:
    """onnxruntime execution providers for ``auto``, ``cpu`` or ``cuda``.

    ``auto`` takes CUDA only when the installed onnxruntime build has its CUDA provider (the
    onnxruntime-gpu wheel); ``cuda`` insists on it and fails clearly otherwise.
    """
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise RuntimeError("device=cuda, but this onnxruntime has no CUDA provider "
                           f"(available: {available}); install onnxruntime-gpu")
    return ["CPUExecutionProvider"]


class OnnxRunner:
    """One onnxruntime session; reads its input name and output order from the model itself."""

    def __init__(self, path: Path, device: str = "auto", num_threads: int = 0, spin_wait: bool = True):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not spin_wait:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers_for(device))
        first_input = self.session.get_inputs()[0]
        self.input_name = first_input.name
        self.input_shape = tuple(first_input.shape)
        self.output_names = [output.name for output in self.session.get_outputs()]

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(batch)}))


class TorchRunner:
    """Runs a torch module the same way, for checks against its exported graph and for benchmarks."""

    def __init__(self, module):
        import torch

        self._torch = torch
        self.module = module.eval()

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        with self._torch.inference_mode():
            outputs = self.module(self._torch.from_numpy(np.ascontiguousarray(batch)))
        if not isinstance(outputs, tuple):
            outputs = (outputs,)
        return tuple(output.numpy() for output in outputs)
