# ruff: noqa: RUF013  (signatures copy ComfyUI's own, ``x: str = None`` included)
"""Test double of ``comfy_api.latest.io``: the schema classes the pack uses, nothing more.

Each class keeps the real constructor parameters and ``as_dict`` output for the fields we use, so
that ``ComfyNode.GET_NODE_INFO_V1()`` (what ``/object_info`` serves) is identical to ComfyUI's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import torch


def prune_dict(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


class NumberDisplay(str, Enum):
    number = "number"
    slider = "slider"


class Input:
    """Base class of a node input; ``Parent`` is the ComfyType that owns it."""

    Parent: type[ComfyTypeI] | None = None

    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 extra_dict=None, raw_link: bool = None):
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = extra_dict if extra_dict is not None else {}
        self.rawLink = raw_link

    @property
    def io_type(self) -> str:
        return self.Parent.io_type

    def as_dict(self) -> dict:
        return prune_dict({
            "display_name": self.display_name,
            "optional": self.optional,
            "tooltip": self.tooltip,
            "lazy": self.lazy,
            "rawLink": self.rawLink,
        }) | prune_dict(self.extra_dict)

    def get_io_type(self) -> str:
        return self.io_type

    def validate(self) -> None:
        pass


class WidgetInput(Input):
    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 default: Any = None, socketless: bool = None, widget_type: str = None, force_input: bool = None,
                 extra_dict=None, raw_link: bool = None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input

    def as_dict(self) -> dict:
        return super().as_dict() | prune_dict({
            "default": self.default,
            "socketless": self.socketless,
            "widgetType": self.widget_type,
            "forceInput": self.force_input,
        })

    def get_io_type(self) -> str:
        return self.widget_type if self.widget_type is not None else super().get_io_type()


class Output:
    Parent: type[ComfyTypeIO] | None = None

    def __init__(self, id: str = None, display_name: str = None, tooltip: str = None, is_output_list=False):
        self.id = id
        self.display_name = display_name if display_name else id
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    @property
    def io_type(self) -> str:
        return self.Parent.io_type

    def get_io_type(self) -> str:
        return self.io_type

    def validate(self) -> None:
        pass


class ComfyTypeI:
    io_type: str = None
    Type = Any

    class Input(Input):
        ...


class ComfyTypeIO(ComfyTypeI):
    class Output(Output):
        ...


def comfytype(io_type: str):
    """Bind ``io_type`` to a ComfyType and give it its own Input/Output classes."""
    def decorator(cls):
        cls.io_type = io_type
        for name in ("Input", "Output"):
            base = getattr(cls, name, None)
            if base is not None:
                setattr(cls, name, type(base.__name__, (base,), {"Parent": cls}))
        return cls
    return decorator


def Custom(io_type: str) -> type[ComfyTypeIO]:
    @comfytype(io_type=io_type)
    class CustomComfyType(ComfyTypeIO):
        ...
    return CustomComfyType


@comfytype(io_type="BOOLEAN")
class Boolean(ComfyTypeIO):
    Type = bool

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                     default: bool = None, label_on: str = None, label_off: str = None,
                     socketless: bool = None, force_input: bool = None, extra_dict=None, raw_link: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link)
            self.label_on = label_on
            self.label_off = label_off

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict({"label_on": self.label_on, "label_off": self.label_off})


@comfytype(io_type="INT")
class Int(ComfyTypeIO):
    Type = int

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                     default: int = None, min: int = None, max: int = None, step: int = None,
                     control_after_generate: bool = None, display_mode: NumberDisplay = None,
                     socketless: bool = None, force_input: bool = None, extra_dict=None, raw_link: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link)
            self.min, self.max, self.step = min, max, step
            self.control_after_generate = control_after_generate
            self.display_mode = display_mode

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict({
                "min": self.min,
                "max": self.max,
                "step": self.step,
                "control_after_generate": self.control_after_generate,
                "display": self.display_mode.value if self.display_mode else None,
            })


@comfytype(io_type="FLOAT")
class Float(ComfyTypeIO):
    Type = float

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                     default: float = None, min: float = None, max: float = None, step: float = None,
                     round: float = None, display_mode: NumberDisplay = None,
                     socketless: bool = None, force_input: bool = None, extra_dict=None, raw_link: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link)
            self.min, self.max, self.step, self.round = min, max, step, round
            self.display_mode = display_mode

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict({
                "min": self.min,
                "max": self.max,
                "step": self.step,
                "round": self.round,
                "display": self.display_mode,
            })


@comfytype(io_type="STRING")
class String(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                     multiline=False, placeholder: str = None, default: str = None, dynamic_prompts: bool = None,
                     socketless: bool = None, force_input: bool = None, extra_dict=None, raw_link: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link)
            self.multiline = multiline
            self.placeholder = placeholder
            self.dynamic_prompts = dynamic_prompts

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict({
                "multiline": self.multiline,
                "placeholder": self.placeholder,
                "dynamicPrompts": self.dynamic_prompts,
            })


@comfytype(io_type="COMBO")
class Combo(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, options: list[str] | list[int] | type[Enum] = None, display_name: str = None,
                     optional=False, tooltip: str = None, lazy: bool = None, default: str | int | Enum = None,
                     control_after_generate: bool = None, upload=None, image_folder=None, remote=None,
                     socketless: bool = None, extra_dict=None, raw_link: bool = None):
            if isinstance(options, type) and issubclass(options, Enum):
                options = [v.value for v in options]
            if isinstance(default, Enum):
                default = default.value
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, None,
                             extra_dict, raw_link)
            self.multiselect = False
            self.options = options
            self.control_after_generate = control_after_generate
            if upload is not None or image_folder is not None or remote is not None:
                raise NotImplementedError("the test double does not model upload/image_folder/remote combos")

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict({
                "multiselect": self.multiselect,
                "options": self.options,
                "control_after_generate": self.control_after_generate,
            })

    class Output(Output):
        def __init__(self, id: str = None, display_name: str = None, options: list[str] = None, tooltip: str = None,
                     is_output_list=False):
            super().__init__(id, display_name, tooltip, is_output_list)
            self.options = options if options is not None else []


def _tensor_type(io_type: str) -> type[ComfyTypeIO]:
    @comfytype(io_type=io_type)
    class TensorType(ComfyTypeIO):
        Type = torch.Tensor
    return TensorType


Image = _tensor_type("IMAGE")
Mask = _tensor_type("MASK")
Audio = Custom("AUDIO")
Video = Custom("VIDEO")
Conditioning = Custom("CONDITIONING")


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"


@dataclass
class NodeInfoV1:
    input: dict = None
    input_order: dict[str, list[str]] = None
    output: list[str] = None
    output_is_list: list[bool] = None
    output_name: list[str] = None
    output_tooltips: list[str] = None
    output_matchtypes: list[str] = None
    name: str = None
    display_name: str = None
    description: str = None
    python_module: Any = None
    category: str = None
    output_node: bool = None
    deprecated: bool = None
    experimental: bool = None
    api_node: bool = None


@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list[Input] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    hidden: list[Hidden] = field(default_factory=list)
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def validate(self) -> None:
        """Input ids and output ids must each be unique."""
        for kind, ids in (("Input", [i.id for i in self.inputs]), ("Output", [o.id for o in self.outputs])):
            duplicates = sorted({i for i in ids if ids.count(i) > 1})
            if duplicates:
                raise ValueError(f"{kind} ids must be unique, but {duplicates} are not.")
        for item in [*self.inputs, *self.outputs]:
            item.validate()

    def finalize(self) -> None:
        if self.is_output_node:
            for hidden in (Hidden.prompt, Hidden.extra_pnginfo):
                if hidden not in self.hidden:
                    self.hidden.append(hidden)
        for i, output in enumerate(self.outputs):
            if output.id is None:
                output.id = f"_{i}_{output.io_type}_"

    def get_v1_info(self, cls) -> NodeInfoV1:
        inputs: dict[str, dict] = {"required": {}}
        for i in self.inputs:
            as_dict = i.as_dict()
            as_dict.pop("optional", None)
            inputs.setdefault("optional" if i.optional else "required", {})[i.id] = (i.get_io_type(), as_dict)
        for hidden in self.hidden:
            inputs.setdefault("hidden", {})[hidden.name] = (hidden.value,)
        return NodeInfoV1(
            input=inputs,
            input_order={key: list(value.keys()) for key, value in inputs.items()},
            output=[o.io_type for o in self.outputs],
            output_is_list=[o.is_output_list for o in self.outputs],
            output_name=[o.display_name if o.display_name else o.io_type for o in self.outputs],
            output_tooltips=[o.tooltip if o.tooltip else None for o in self.outputs],
            output_matchtypes=None,
            name=self.node_id,
            display_name=self.display_name,
            category=self.category,
            description=self.description,
            output_node=self.is_output_node,
            deprecated=self.is_deprecated,
            experimental=self.is_experimental,
            api_node=self.is_api_node,
            python_module=getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
        )


class ComfyNode:
    """Base class of a V3 node: ``define_schema`` and ``execute`` are classmethods."""

    RELATIVE_PYTHON_MODULE = None

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        schema = cls.define_schema()
        schema.finalize()
        schema.validate()
        return schema

    @classmethod
    def GET_NODE_INFO_V1(cls) -> dict[str, Any]:
        return asdict(cls.GET_SCHEMA().get_v1_info(cls))


class NodeOutput:
    def __init__(self, *args: Any, ui: dict = None, expand: dict = None, block_execution: str = None):
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self):
        return self.args if len(self.args) > 0 else None

    def __getitem__(self, index) -> Any:
        return self.args[index]
