"""ComfyUI's two workflow formats, for the shipped workflows.

* API format (``api_workflows/*_api.json``): ``{node_id: {"class_type", "inputs": {name: value | [source,
  slot]}}}``, what ``POST /prompt`` takes.
* UI format (``example_workflows/<title>.json``, ComfyUI's template folder for a custom-node pack): what the
  editor saves: ``nodes`` (type, title, position, size, ``widgets_values`` in the order of the node's widget
  inputs, socket ``inputs``/``outputs``, ``properties``), ``links`` (``[id, from_node, from_slot, to_node,
  to_slot, type]``), ``groups`` and ``extra.ds`` (the zoom and offset the editor opens with).

``ui_from_api`` writes a UI file from an API one and the ``LAYOUTS`` entry below (groups left to right,
custom titles, Markdown notes); ``python tests/comfy_workflows.py`` rewrites every example workflow.
``api_from_ui`` reads a UI file back through the node schemas, so a test can check that both files still
describe the same graph for the current schemas.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # noqa: F401  (first: puts the ComfyUI test double on sys.path)

# isort: split
import folder_paths
from comfy_api.latest import io
from comfy_executor import Executor, is_link

WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_AFTER_GENERATE = "fixed"  # the extra widget value ComfyUI stores after a seed widget
VIRTUAL = {"MarkdownNote", "Note"}  # editor-only nodes, never sent to the server
REPO = Path(__file__).resolve().parents[1]
API_DIR, TEMPLATE_DIR = REPO / "api_workflows", REPO / "example_workflows"

# What the editor's Missing Models dialog accepts (comfyui-frontend-package, MissingModelsWarning): a URL
# on one of these hosts, a file name with one of these suffixes, into a known model folder.
DOWNLOAD_HOSTS = ("https://civitai.com/", "https://huggingface.co/")
DOWNLOAD_SUFFIXES = (".safetensors", ".sft")

# file a shipped workflow names -> (ComfyUI model folder, URL the Missing Models dialog can download).
# Only files the dialog accepts; the others (a pickle, a folder with its config.json, a host it refuses)
# are explained in each workflow's Models note instead.
DOWNLOADS = {
    "wan_2.1_vae.safetensors": (  # ComfyUI's repackaged Wan2.1 VAE, as in ComfyUI's own Wan workflows
        "vae", ("https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/"
                "wan_2.1_vae.safetensors")),
    "taew2_1.safetensors": (  # madebyollin/taehv's safetensors file, as mirrored for ComfyUI Wan packs
        "vae_approx", "https://huggingface.co/Kijai/WanVideo_comfy/resolve/main/taew2_1.safetensors"),
}

GROUP_COLORS = {"Models": "#3f789e", "Inputs": "#8A8", "Lip sync": "#a1309b", "Output": "#b58b2a",
                "Faces": "#88A", "Scores": "#b06634"}
NODE_WIDTH, GAP, PAD, HEADER, TITLE = 340, 40, 20, 46, 30  # graph units: LiteGraph draws titles above pos


@dataclass(frozen=True)
class Note:
    """A Markdown note (ComfyUI's MarkdownNote) with its title and size (the editor makes it at least 88 high)."""

    title: str
    text: str
    size: tuple[int, int]

    def __post_init__(self):
        assert self.size[1] >= 88, f"note '{self.title}' is lower than the editor's minimum"


@dataclass(frozen=True)
class Group:
    title: str
    columns: list[list]  # API node ids (str) and Notes, top to bottom
    note: Note | None = None  # across the top of the group


@dataclass(frozen=True)
class Layout:
    api: str  # file in api_workflows/
    name: str  # template name: the file stem in example_workflows/, shown as the template's title
    bands: list[list[Group]]  # left to right; the groups of a band stacked top to bottom
    titles: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)


def _md(lines: list[str]) -> str:
    return "\n".join(lines)


BUNDLED_NOTE = Note("Read me: models", _md([
    "## Models: nothing to download",
    "Every file here ships with the pack (`lipforcing_core/demo/weights/`) and is listed after your own files:",
    "- `demo_student.safetensors` — models/diffusion_models",
    "- `demo_vae.safetensors` — models/vae",
    "- `demo_syncnet.safetensors` — models/syncnet",
    "- the audio encoder *demo log-mel (built in, no download)*",
    "",
    "The demo model only knows its cartoon faces. For real videos open **Lip Forcing 14B (released model)**.",
]), (380, 230))
DEMO_INPUT_NOTE = Note("Read me: the demo clip", _md([
    "**Demo Clip** renders a cartoon face saying one sentence (*source_frames*), the speech to dub it to "
    "(*target_speech*, seeds ≥ 1,000,000 were never used in training) and the exact answer (*ground_truth*).",
    "",
    "The faces are already aligned 64×64 crops, so there is no Face Align here.",
]), (340, 170))
DEMO_SCORES_NOTE = Note("Read me: the scores below", _md([
    "Higher **LSE-C** and lower **LSE-D** = better lip sync; offset 0 = in sync. The demo SyncNet has its own "
    "scale: compare the output's scores with the ground truth's.",
]), (340, 120))


def _released_models(model_line: str) -> Note:
    return Note("Read me: models", _md([
        "## Models for this workflow",
        "Put each file in the folder named (inside `ComfyUI/models/`), then press **R** to refresh the loaders. "
        "The Missing Models dialog offers the files marked *(dialog)*: it downloads only `.safetensors` files "
        "from Hugging Face or Civitai.",
        "",
        model_line,
        "- `wan_2.1_vae.safetensors` → **vae** *(dialog)*: "
        "[Comfy-Org/Wan_2.1_ComfyUI_repackaged](https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged), "
        "split_files/vae.",
        "- `taew2_1.safetensors` → **vae_approx** *(dialog)*: [madebyollin/taehv](https://github.com/madebyollin/taehv) "
        "(safetensors/), mirrored in [Kijai/WanVideo_comfy](https://huggingface.co/Kijai/WanVideo_comfy).",
        "- `model.safetensors` + `config.json` → **audio_encoders/wav2vec2-base-960h/**: both files from "
        "[facebook/wav2vec2-base-960h](https://huggingface.co/facebook/wav2vec2-base-960h), by hand (the dialog "
        "cannot fetch config.json).",
        "- `a_person_talking.safetensors` → **text_embeddings** (optional): a precomputed UMT5 prompt embedding "
        "[1, N, 4096]. Without one, delete *Load Text Embedding*: the sampler then uses a zero text embedding.",
    ]), (380, 440))


MODEL_14B = ("- `lipforcing_14b.pth` → **diffusion_models**: [JinhyukJang/lipforcing]"
             "(https://huggingface.co/JinhyukJang/lipforcing) (28.6 GB). A pickle, which the dialog refuses: "
             "download it by hand; optionally convert it once with "
             "`python -m lipforcing_core convert lipforcing_14b.pth -o lipforcing_14b.safetensors` and pick the "
             "safetensors file in the loader.")
MODEL_1_3B = ("- `lipforcing_1_3b.pth` → **diffusion_models**: the 1.3B student is not published; put your own "
              "merged 1.3B checkpoint here (any name, picked in the loader).")
VIDEO_INPUT_NOTE = Note("Read me: the input", _md([
    "Put a **25 fps** talking-head video with one visible face in `ComfyUI/input/` (or upload it here).",
    "",
    "The speech comes from the video's own audio. To dub to other speech, add a **Load Audio** node and "
    "connect it to *Audio Encode* and *Save Video* instead.",
]), (340, 170))
LONG_VIDEO_NOTE = Note("Read me: the input", _md([
    "Put a talking-head video with one visible face in `ComfyUI/input/` (or upload it here). **Any frame rate** "
    "works: it is converted to 25 fps on the way.",
    "",
    "The video is **streamed** from file to file, chunk by chunk, never held as an IMAGE batch (a minute of "
    "1080p as an IMAGE batch would be 37 GB), so any length fits in memory. The speech is the video's own audio; "
    "wire a **Load Audio** node to *audio* to dub it to other speech.",
]), (340, 230))
MASK_NOTE = Note("Why two mouth masks", _md([
    "Two mouth masks of the same shape: **256** is the grid the sampler's mask is built on (as the release), "
    "**512** matches the aligned faces for pasting back.",
]), (360, 90))


SYNCNET_NOTE = Note("Read me: model", _md([
    "## Model",
    "- `syncnet_v2.model` → **syncnet** (a folder the pack adds): the VGG SyncNet v2 that "
    "[syncnet_python](https://github.com/joonson/syncnet_python)'s `download_model.sh` fetches "
    "([direct link](https://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model)). Download it "
    "by hand: the Missing Models dialog takes neither that host nor a pickle.",
    "",
    "Press **R** to refresh the loader afterwards."]), (340, 170))
SYNCNET_INPUT_NOTE = Note("Read me: the input", "A **25 fps** video with one visible face and its speech, in `ComfyUI/input/`. "
                          "SyncNet v2 needs 25 fps.", (340, 90))
SCORES_NOTE = Note("Read me: the scores", "**LSE-C**: sync confidence, higher is better. **LSE-D**: distance at the best offset, lower is "
                   "better. **offset**: frames by which the audio leads (0 = in sync).", (0, 90))


def _released(api: str, name: str, model_line: str) -> Layout:
    return Layout(
        api=api, name=name,
        bands=[[Group("Models", [["1", "2", "3", "4", "5", _released_models(model_line)]])],
               [Group("Inputs", [["6", VIDEO_INPUT_NOTE]])],
               [Group("Lip sync", [["7", "8", "9"], ["11", "10", "12", MASK_NOTE]])],
               [Group("Output", [["13", "14"]])]],
        titles={"9": "Mouth Mask 256 (sampler)", "10": "Mouth Mask 512 (paste-back)", "14": "Length summary"},
        sizes={"4": (430, 84), "8": (360, 128), "9": (360, 84), "11": (380, 520), "10": (360, 84), "12": (360, 96),
               "13": (360, 480), "14": (360, 120)})


LAYOUTS = [
    Layout(
        api="lipforcing_demo_api.json", name="Lip Forcing demo (no downloads)",
        bands=[[Group("Models", [["4", "5", "2", "10", BUNDLED_NOTE]])],
               [Group("Inputs", [["1", DEMO_INPUT_NOTE]])],
               [Group("Lip sync", [["3", "6"], ["7", "8"]])],
               [Group("Output", [["9"], ["13", DEMO_SCORES_NOTE]]),
                Group("Scores", [["11", "14", "15"], ["12", "16", "17"]])]],
        titles={"1": "Demo Clip (source, speech, ground truth)", "6": "Mouth Mask 64 (sampler and paste-back)",
                "11": "SyncNet Score — output", "12": "SyncNet Score — ground truth", "13": "Length summary",
                "14": "Scores — output", "15": "Offset plot — output", "16": "Scores — ground truth",
                "17": "Offset plot — ground truth"},
        sizes={"2": (430, 84), "1": (360, 194), "6": (360, 84), "7": (380, 520), "9": (340, 420),
               "13": (340, 120), "14": (340, 120), "15": (340, 230), "16": (340, 120), "17": (340, 230)}),
    _released("lipforcing_14b_api.json", "Lip Forcing 14B (released model)", MODEL_14B),
    _released("lipforcing_1_3b_api.json", "Lip Forcing 1.3B student", MODEL_1_3B),
    Layout(
        api="lipforcing_14b_video_api.json", name="Lip Forcing 14B long video (streamed)",
        bands=[[Group("Models", [["1", "2", "3", "4", "5", _released_models(MODEL_14B)]])],
               [Group("Inputs", [["6", LONG_VIDEO_NOTE]])],
               [Group("Lip sync", [["7"]])],
               [Group("Output", [["8", "9"]])]],
        titles={"9": "Summary"},
        sizes={"4": (430, 84), "6": (340, 320), "7": (380, 300), "8": (360, 480), "9": (360, 120)}),
    Layout(
        api="syncnet_score_api.json", name="SyncNet lip sync score",
        bands=[[Group("Models", [["3", SYNCNET_NOTE]])],
               [Group("Inputs", [["1", SYNCNET_INPUT_NOTE]])],
               [Group("Faces", [["2"]])],
               [Group("Scores", [["4"], ["5", "6"]], note=SCORES_NOTE)]],
        titles={"4": "SyncNet Score", "5": "Scores", "6": "Offset plot"},
        sizes={"2": (360, 128), "5": (340, 120), "6": (340, 250)}),
]


def _widget_specs(schema) -> list:
    return [spec for spec in schema.inputs if spec.get_io_type() in WIDGETS]


def _downloads(widget_values: list) -> dict:
    """``{"models": [...]}`` for the widget values that name a file of ``DOWNLOADS``, else ``{}``."""
    models = [{"name": v, "url": DOWNLOADS[v][1], "directory": DOWNLOADS[v][0]}
              for v in widget_values if isinstance(v, str) and v in DOWNLOADS]
    return {"models": models} if models else {}


def _estimate_height(schema) -> int:
    """The node body's height as LiteGraph computes it: one 20-unit row per socket line, 24 per widget."""
    widgets = sum(1 + bool(getattr(s, "control_after_generate", None)) for s in _widget_specs(schema))
    sockets = max(sum(s.get_io_type() not in WIDGETS for s in schema.inputs), len(schema.outputs))
    return 20 * sockets + 24 * widgets + 16


def _items(layout: Layout):
    for band in layout.bands:
        for group in band:
            if group.note:
                yield group.note
            for column in group.columns:
                yield from column


def _place(layout: Layout, sizes: dict) -> tuple[dict, list, list[int]]:
    """Positions ``{item: (x, y, w, h)}``, groups ``[(title, x, y, w, h)]`` and the graph's bounding box."""
    places, groups, x = {}, [], 0
    for band in layout.bands:
        y, band_width = 0, 0
        for group in band:
            widths = [max(sizes[item][0] for item in column) for column in group.columns]
            inner = sum(widths) + PAD * (len(widths) - 1)
            top = y + (HEADER if group.title else 0)
            if group.note:
                places[group.note] = (x + PAD, top + TITLE + PAD, inner, group.note.size[1])
                top += group.note.size[1] + TITLE + PAD
            gx, bottom = x, top
            for column, width in zip(group.columns, widths):
                cy = top
                for item in column:
                    places[item] = (gx + PAD, cy + TITLE + PAD, *sizes[item])
                    cy += sizes[item][1] + TITLE + PAD
                gx, bottom = gx + width + PAD, max(bottom, cy)
            groups.append((group.title, x, y, inner + 2 * PAD, bottom - y + PAD))
            band_width = max(band_width, inner + 2 * PAD)
            y = bottom + PAD + GAP
        x += band_width + GAP
    return places, groups, [0, 0, x - GAP, max(g[2] + g[4] for g in groups)]


# the canvas a 1920x1080 browser window leaves beside ComfyUI's menus (sidebar left, tabs and Run bar on top)
VIEW_LEFT, VIEW_TOP, VIEW_W, VIEW_H = 90, 110, 1800, 940


def _view(box: list[int]) -> dict:
    """``extra.ds``: the zoom and offset that fit the whole graph in a 1920x1080 window, never above 1."""
    scale = round(min(1.0, VIEW_W / box[2], VIEW_H / box[3]), 3)
    return {"scale": scale, "offset": [round(VIEW_LEFT / scale), round(VIEW_TOP / scale)]}


def ui_from_api(api: dict, schemas: dict, layout: Layout) -> dict:
    """The UI-format graph of an API workflow, laid out by ``layout``: its groups left to right, custom
    titles and Markdown notes."""
    items = list(_items(layout))
    assert sorted(i for i in items if isinstance(i, str)) == sorted(api), f"{layout.name}: layout != graph"
    sizes = {item: item.size if isinstance(item, Note) else
             layout.sizes.get(item, (NODE_WIDTH, _estimate_height(schemas[item]))) for item in items}
    places, groups, box = _place(layout, sizes)
    links, outgoing = [], {}
    for node_id, node in api.items():
        for name, value in node["inputs"].items():
            if is_link(value):
                source_type = schemas[value[0]].outputs[value[1]].io_type
                links.append([len(links) + 1, int(value[0]), value[1], int(node_id), None, source_type, name])
                outgoing.setdefault((value[0], value[1]), []).append(len(links))
    nodes, last_id = [], max(int(n) for n in api)
    order = {node_id: i for i, node_id in enumerate(Executor.order(api))}
    for item in items:
        x, y, w, h = places[item]
        if isinstance(item, Note):
            last_id += 1
            nodes.append({"id": last_id, "type": "MarkdownNote", "pos": [x, y], "size": [w, h], "flags": {},
                          "order": last_id, "mode": 0, "inputs": [], "outputs": [], "properties": {},
                          "title": item.title, "widgets_values": [item.text], "color": "#432", "bgcolor": "#653"})
            continue
        nodes.append({"id": int(item), "type": api[item]["class_type"], "pos": [x, y], "size": [w, h],
                      "flags": {}, "order": order[item], "mode": 0}
                     | ({"title": layout.titles[item]} if item in layout.titles else {})
                     | _ui_node(api, schemas, item, links, outgoing))
    return {"last_node_id": last_id, "last_link_id": len(links), "nodes": sorted(nodes, key=lambda n: n["id"]),
            "links": [link[:6] for link in links],
            "groups": [{"id": i + 1, "title": title, "bounding": [gx, gy, gw, gh],
                        "color": GROUP_COLORS.get(title, "#444"), "font_size": 24, "flags": {}}
                       for i, (title, gx, gy, gw, gh) in enumerate(groups) if title],
            "config": {}, "extra": {"ds": _view(box)}, "version": 0.4}


def _ui_node(api: dict, schemas: dict, node_id: str, links: list, outgoing: dict) -> dict:
    """Sockets, widget values and properties of one node."""
    schema, inputs, sockets, values = schemas[node_id], api[node_id]["inputs"], [], []
    for spec in schema.inputs:
        value = inputs.get(spec.id)
        is_widget = spec.get_io_type() in WIDGETS
        if is_link(value):
            link = next(l for l in links if l[3] == int(node_id) and l[6] == spec.id)
            link[4] = len(sockets)
            socket = {"name": spec.id, "type": spec.get_io_type(), "link": link[0]}
            sockets.append(socket | ({"widget": {"name": spec.id}} if is_widget else {}))
        elif not is_widget:
            sockets.append({"name": spec.id, "type": spec.get_io_type(), "link": None})
        if is_widget:
            values.append(spec.default if is_link(value) or value is None else value)
            if getattr(spec, "control_after_generate", None):
                values.append(CONTROL_AFTER_GENERATE)
    return {"inputs": sockets,
            "outputs": [{"name": out.display_name or out.io_type, "type": out.io_type,
                         "links": outgoing.get((node_id, slot), []), "slot_index": slot}
                        for slot, out in enumerate(schema.outputs)],
            "properties": {"Node name for S&R": schema.node_id} | _downloads(values),
            "widgets_values": values}


def api_from_ui(ui: dict, by_type: dict) -> dict:
    """The API-format graph of a UI workflow, reading widget values through the node schemas (notes,
    which the editor never sends, are left out)."""
    links = {link[0]: link for link in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        if node["type"] in VIRTUAL:
            continue
        schema = by_type[node["type"]]
        linked = {s["name"]: links[s["link"]] for s in node["inputs"] if s.get("link") is not None}
        inputs, values = {}, iter(node.get("widgets_values", []))
        for spec in schema.inputs:
            if spec.get_io_type() in WIDGETS:
                value = next(values)
                if getattr(spec, "control_after_generate", None):
                    next(values)
                if spec.id not in linked:
                    inputs[spec.id] = value
            if spec.id in linked:
                inputs[spec.id] = [str(linked[spec.id][1]), linked[spec.id][2]]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


class PreviewAny(io.ComfyNode):
    """Stand-in for ComfyUI's core *Preview as Text* (comfy_extras/nodes_preview_any.py): shows its input."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="PreviewAny", display_name="Preview as Text", category="utils",
                         inputs=[io.Custom("*").Input("source")], outputs=[], is_output_node=True)

    @classmethod
    def execute(cls, source) -> io.NodeOutput:
        return io.NodeOutput(ui={"text": (source if isinstance(source, str) else json.dumps(source),)})


class PreviewImage(io.ComfyNode):
    """Stand-in for ComfyUI's core *Preview Image* (nodes.py); records the shape instead of saving a PNG."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="PreviewImage", display_name="Preview Image", category="image",
                         inputs=[io.Image.Input("images")], outputs=[], is_output_node=True)

    @classmethod
    def execute(cls, images) -> io.NodeOutput:
        return io.NodeOutput(ui={"images": [{"shape": list(images.shape)}]})


class LoadVideo(io.ComfyNode):
    """Stand-in for ComfyUI's core *Load Video* (comfy_extras/nodes_video.py): a VIDEO of an input-folder file
    (the real combo also has an upload button, which the test double does not model)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        from lipforcing_pack.nodes.paths import input_files

        return io.Schema(node_id="LoadVideo", display_name="Load Video", category="image/video",
                         inputs=[io.Combo.Input("file", options=input_files("video"))], outputs=[io.Video.Output()])

    @classmethod
    def execute(cls, file: str) -> io.NodeOutput:
        from comfy_api.latest import InputImpl

        return io.NodeOutput(InputImpl.VideoFromFile(folder_paths.get_annotated_filepath(file)))


class SaveVideo(io.ComfyNode):
    """Stand-in for ComfyUI's core *Save Video* (comfy_extras/nodes_video.py): the same inputs; copies the
    VIDEO's file (mp4, as its "auto" format and codec keep it) into the output folder."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="SaveVideo", display_name="Save Video", category="image/video",
                         inputs=[io.Video.Input("video"), io.String.Input("filename_prefix", default="video/ComfyUI"),
                                 io.Combo.Input("format", options=["auto", "mp4"], default="auto"),
                                 io.Combo.Input("codec", options=["auto", "h264"], default="auto")],
                         outputs=[], is_output_node=True)

    @classmethod
    def execute(cls, video, filename_prefix: str, format: str, codec: str) -> io.NodeOutput:
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory())
        filename = f"{name}_{counter:05}_.mp4"
        shutil.copyfile(video.get_stream_source(), Path(folder) / filename)
        return io.NodeOutput(ui={"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}],
                                 "animated": (True,)})


def node_classes() -> list[type]:
    """The pack's nodes and stand-ins of the core nodes the shipped workflows use."""
    import comfy_env

    return [*comfy_env.node_classes(), PreviewAny, PreviewImage, LoadVideo, SaveVideo]


def schemas_by_type() -> dict:
    return {cls.GET_SCHEMA().node_id: cls.GET_SCHEMA() for cls in node_classes()}


def template(layout: Layout) -> dict:
    """The UI workflow of ``layout`` for the current node schemas."""
    api, by_type = json.loads((API_DIR / layout.api).read_text()), schemas_by_type()
    return ui_from_api(api, {nid: by_type[node["class_type"]] for nid, node in api.items()}, layout)


def main() -> None:
    """Rewrite every ``example_workflows/<name>.json`` from its API file and layout."""
    for layout in LAYOUTS:
        text = json.dumps(template(layout), indent=2, ensure_ascii=False) + "\n"
        (TEMPLATE_DIR / f"{layout.name}.json").write_text(text)


if __name__ == "__main__":
    main()
