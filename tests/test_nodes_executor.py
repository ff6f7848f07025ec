"""The in-process workflow executor: graph validation, ordering and output type checks.

Uses two small test-only nodes (defined here, never registered by the pack) so the executor's own
rules are tested apart from any real node.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # noqa: F401  (first: puts the ComfyUI test double on sys.path)

# isort: split
from comfy_api.latest import io
from comfy_executor import Executor, WorkflowError


class MakeImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="TestMakeImage", inputs=[
            io.Int.Input("frames", default=2, min=1, max=8, tooltip="frames"),
            io.Combo.Input("shape", options=["good", "bad"], tooltip="what to return"),
        ], outputs=[io.Image.Output(display_name="images")])

    @classmethod
    def execute(cls, frames, shape):
        return io.NodeOutput(torch.zeros(frames, 4, 4, 3) if shape == "good" else torch.zeros(frames, 4, 4))


class CountFrames(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="TestCountFrames", inputs=[
            io.Image.Input("images", tooltip="images"),
            io.Float.Input("scale", default=1.0, optional=True, tooltip="scale"),
        ], outputs=[io.Int.Output(display_name="count")])

    @classmethod
    async def execute(cls, images, scale=1.0):
        if images.shape[0] > 5:
            raise ValueError("too many frames")
        return io.NodeOutput(int(images.shape[0] * scale))


@pytest.fixture()
def executor():
    return Executor([MakeImage, CountFrames])


def graph(frames=2, shape="good", **count_inputs):
    return {
        "2": {"class_type": "TestCountFrames", "inputs": {"images": ["1", 0], **count_inputs}},
        "1": {"class_type": "TestMakeImage", "inputs": {"frames": frames, "shape": shape}},
    }


def test_runs_in_topological_order(executor):
    result = executor.run(graph(frames=3, scale=2.0))
    assert result.order == ["1", "2"]
    assert result.outputs["1"][0].shape == (3, 4, 4, 3)
    assert result.outputs["2"] == (6,)


@pytest.mark.parametrize("workflow, message", [
    ({"1": {"class_type": "Nope", "inputs": {}}}, "unknown node type"),
    (graph(frames=9), r"input 'frames': 9 is outside \[1, 8\]"),
    (graph(frames=2.5), "expected INT"),
    (graph(shape="square"), "is not one of"),
    (graph(extra=1), "unknown input 'extra'"),
    ({"1": {"class_type": "TestCountFrames", "inputs": {}}}, "required input 'images' is missing"),
    ({"1": {"class_type": "TestCountFrames", "inputs": {"images": ["9", 0]}}}, "missing node 9"),
    ({**graph(), "3": {"class_type": "TestCountFrames", "inputs": {"images": ["2", 0]}}},
     "expects IMAGE but is linked to a INT output"),
    ({**graph(), "3": {"class_type": "TestCountFrames", "inputs": {"images": ["1", 1]}}}, "has 1 outputs"),
    ({"1": {"class_type": "TestCountFrames", "inputs": {"images": {"not": "a link"}}}}, "must be linked"),
])
def test_rejects_invalid_graphs_before_running(executor, workflow, message):
    with pytest.raises(WorkflowError, match=message):
        executor.validate(workflow)


def test_rejects_cycles(executor):
    class Relay(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="TestRelay", inputs=[io.Image.Input("images", tooltip="x")],
                             outputs=[io.Image.Output()])

        @classmethod
        def execute(cls, images):
            return io.NodeOutput(images)

    cyclic = {"1": {"class_type": "TestRelay", "inputs": {"images": ["2", 0]}},
              "2": {"class_type": "TestRelay", "inputs": {"images": ["1", 0]}}}
    with pytest.raises(WorkflowError, match="cycle"):
        Executor([Relay]).run(cyclic)


def test_checks_output_values_against_declared_types(executor):
    with pytest.raises(WorkflowError, match=r"node 1 \(TestMakeImage\): output 'images': IMAGE must be"):
        executor.run(graph(shape="bad"))


def test_node_errors_name_the_node(executor):
    with pytest.raises(WorkflowError, match=r"node 2 \(TestCountFrames\): ValueError: too many frames"):
        executor.run(graph(frames=6))
