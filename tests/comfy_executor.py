"""Run an API-format ComfyUI workflow through V3 node classes in-process, the way ComfyUI would.

API format: ``{node_id: {"class_type": str, "inputs": {name: value | [source_id, output_index]}}}``.
Before anything runs, the graph is validated against each node's schema (known class, required
inputs present, no unknown inputs, links pointing at an existing output of the same type, widget
values of the right type inside min/max, combo values among the options). Nodes then run in
topological order; every output value is checked against its declared ComfyUI type (IMAGE is a
``[B,H,W,C]`` tensor, AUDIO a waveform dict, ...). Any failure is a ``WorkflowError`` naming the node.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch


class WorkflowError(Exception):
    def __init__(self, node_id: str, class_type: str, message: str):
        super().__init__(f"node {node_id} ({class_type}): {message}")
        self.node_id, self.class_type, self.message = node_id, class_type, message


@dataclass
class WorkflowResult:
    outputs: dict[str, tuple]
    ui: dict[str, Any]
    order: list[str]
    progress: list[tuple[str, int, int, bool]] = field(default_factory=list)  # node, value, total, has preview


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _check_widget(spec, value: Any) -> str | None:
    """Why ``value`` is not acceptable for a widget input, or None."""
    io_type = spec.get_io_type()
    if io_type == "COMBO":
        return None if value in spec.options else f"{value!r} is not one of {spec.options}"
    kinds = {"INT": int, "FLOAT": (int, float), "STRING": str, "BOOLEAN": bool}
    if io_type in kinds:
        if not isinstance(value, kinds[io_type]) or (io_type != "BOOLEAN" and isinstance(value, bool)):
            return f"expected {io_type}, got {type(value).__name__} {value!r}"
        low, high = getattr(spec, "min", None), getattr(spec, "max", None)
        if (low is not None and value < low) or (high is not None and value > high):
            return f"{value} is outside [{low}, {high}]"
        return None
    return f"a {io_type} input must be linked to another node's output"


def _check_value(io_type: str, value: Any) -> str | None:
    """Why an output ``value`` does not have the shape ComfyUI expects for ``io_type``, or None."""
    if io_type == "IMAGE":
        ok = isinstance(value, torch.Tensor) and value.ndim == 4 and value.shape[-1] in (3, 4) and value.is_floating_point()
        return None if ok else "IMAGE must be a float tensor [B,H,W,3]"
    if io_type == "MASK":
        ok = isinstance(value, torch.Tensor) and value.ndim in (2, 3) and value.is_floating_point()
        return None if ok else "MASK must be a float tensor [B,H,W]"
    if io_type == "AUDIO":
        ok = (isinstance(value, dict) and isinstance(value.get("waveform"), torch.Tensor)
              and value["waveform"].ndim == 3 and isinstance(value.get("sample_rate"), int))
        return None if ok else "AUDIO must be {'waveform': [B,C,T], 'sample_rate': int}"
    if io_type == "CONDITIONING":
        ok = isinstance(value, list) and all(isinstance(c[0], torch.Tensor) and isinstance(c[1], dict) for c in value)
        return None if ok else "CONDITIONING must be a list of [tensor, dict]"
    kinds = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
    if io_type in kinds and not isinstance(value, kinds[io_type]):
        return f"{io_type} output is a {type(value).__name__}"
    return None


class Executor:
    def __init__(self, node_classes: list[type]):
        self.classes = {cls.GET_SCHEMA().node_id: cls for cls in node_classes}

    def validate(self, workflow: dict) -> dict[str, Any]:
        """Schemas of all nodes after checking the graph; raises WorkflowError on the first problem."""
        schemas = {}
        for node_id, node in workflow.items():
            class_type = node.get("class_type")
            if class_type not in self.classes:
                raise WorkflowError(node_id, class_type, "unknown node type")
            schemas[node_id] = self.classes[class_type].GET_SCHEMA()
        for node_id, node in workflow.items():
            schema, inputs = schemas[node_id], node.get("inputs", {})
            specs = {spec.id: spec for spec in schema.inputs}
            for name in inputs.keys() - specs.keys():
                raise WorkflowError(node_id, schema.node_id, f"unknown input '{name}'")
            for name, spec in specs.items():
                if name not in inputs:
                    if not spec.optional:
                        raise WorkflowError(node_id, schema.node_id, f"required input '{name}' is missing")
                    continue
                problem = self._check_input(workflow, schemas, spec, inputs[name])
                if problem:
                    raise WorkflowError(node_id, schema.node_id, f"input '{name}': {problem}")
        return schemas

    @staticmethod
    def _check_input(workflow: dict, schemas: dict, spec, value: Any) -> str | None:
        if not is_link(value):
            return _check_widget(spec, value)
        source, index = value
        if source not in workflow:
            return f"linked to missing node {source}"
        outputs = schemas[source].outputs
        if not 0 <= index < len(outputs):
            return f"linked to output {index} of node {source}, which has {len(outputs)} outputs"
        if spec.get_io_type() != "*" and outputs[index].io_type != spec.get_io_type():  # "*": any type
            return f"expects {spec.get_io_type()} but is linked to a {outputs[index].io_type} output"
        return None

    @staticmethod
    def order(workflow: dict) -> list[str]:
        """Topological order (Kahn), ties broken by node id; raises on cycles."""
        deps = {nid: {v[0] for v in node.get("inputs", {}).values() if is_link(v)} for nid, node in workflow.items()}
        order: list[str] = []
        ready = sorted(nid for nid, d in deps.items() if not d)
        while ready:
            nid = ready.pop(0)
            order.append(nid)
            for other, d in deps.items():
                if nid in d:
                    d.discard(nid)
                    if not d and other not in order and other not in ready:
                        ready.append(other)
            ready.sort()
        if len(order) != len(workflow):
            cycle = sorted(set(workflow) - set(order))
            raise WorkflowError(cycle[0], workflow[cycle[0]].get("class_type"), f"cycle among nodes {cycle}")
        return order

    def run(self, workflow: dict) -> WorkflowResult:
        import comfy.utils

        schemas = self.validate(workflow)
        result = WorkflowResult(outputs={}, ui={}, order=self.order(workflow))
        for node_id in result.order:
            def hook(value, total, preview, node_id=None, _nid=node_id):
                result.progress.append((_nid, value, total, preview is not None))
            comfy.utils.set_progress_bar_global_hook(hook)
            try:
                self._run_node(workflow, schemas, node_id, result)
            finally:
                comfy.utils.set_progress_bar_global_hook(None)
        return result

    def _run_node(self, workflow: dict, schemas: dict, node_id: str, result: WorkflowResult) -> None:
        schema, cls = schemas[node_id], self.classes[workflow[node_id]["class_type"]]
        kwargs = {name: result.outputs[v[0]][v[1]] if is_link(v) else v
                  for name, v in workflow[node_id].get("inputs", {}).items()}
        try:
            out = cls.execute(**kwargs)
            if inspect.iscoroutine(out):
                out = asyncio.run(out)
        except Exception as err:
            raise WorkflowError(node_id, schema.node_id, f"{type(err).__name__}: {err}") from err
        values = tuple(out.args) if hasattr(out, "args") else tuple(out or ())
        if len(values) != len(schema.outputs):
            raise WorkflowError(node_id, schema.node_id, f"returned {len(values)} values for {len(schema.outputs)} outputs")
        for spec, value in zip(schema.outputs, values):
            problem = _check_value(spec.io_type, value)
            if problem:
                raise WorkflowError(node_id, schema.node_id, f"output '{spec.display_name}': {problem}")
        result.outputs[node_id] = values
        if getattr(out, "ui", None) is not None:
            result.ui[node_id] = out.ui
