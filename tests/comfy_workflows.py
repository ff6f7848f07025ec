"""ComfyUI's two workflow formats, for the files in ``workflows/``.

* API format (``*_api.json``): ``{node_id: {"class_type", "inputs": {name: value | [source, slot]}}}``,
  what ``POST /prompt`` takes.
* UI format (``*.json``): what the editor saves: ``nodes`` (type, ``widgets_values`` in the order of the
  node's widget inputs, socket ``inputs``/``outputs``, ``properties``) and ``links``
  (``[id, from_node, from_slot, to_node, to_slot, type]``).

``ui_from_api`` writes the UI file from the API one (``python tests/comfy_workflows.py X_api.json``);
``api_from_ui`` reads it back through the node schemas, so a test can check that both files still
describe the same graph for the current schemas. Loaders naming a file of ``DOWNLOADS`` get the
``properties.models`` entry with which the ComfyUI editor offers a missing model for download.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from comfy_executor import Executor, is_link

WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_AFTER_GENERATE = "fixed"  # the extra widget value ComfyUI stores after a seed widget

# file a shipped workflow names -> (ComfyUI model folder, official download URL). Only files with a
# verified official single-file source: the wav2vec2 folder (needs its config.json), the 1.3B student
# (unreleased) and the text embedding (made locally) have none; the demo files are bundled.
DOWNLOADS = {
    "lipforcing_14b.pth": (  # the Lip Forcing release (README "Weights")
        "diffusion_models", "https://huggingface.co/JinhyukJang/lipforcing/resolve/main/lipforcing_14b.pth"),
    "wan_2.1_vae.safetensors": (  # ComfyUI's repackaged Wan2.1 VAE, as in ComfyUI's own Wan workflows
        "vae", ("https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/"
                "wan_2.1_vae.safetensors")),
    "taew2_1.safetensors": (  # madebyollin/taehv: converted safetensors live in safetensors/
        "vae_approx", "https://raw.githubusercontent.com/madebyollin/taehv/main/safetensors/taew2_1.safetensors"),
    "syncnet_v2.model": (  # syncnet_python's download_model.sh, as the Lip Forcing README links it
        "syncnet", "https://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model"),
}


def _widget_specs(schema) -> list:
    return [spec for spec in schema.inputs if spec.get_io_type() in WIDGETS]


def _depths(api: dict) -> dict[str, int]:
    depth: dict[str, int] = {}
    for node_id in Executor.order(api):
        links = [v[0] for v in api[node_id]["inputs"].values() if is_link(v)]
        depth[node_id] = 1 + max((depth[s] for s in links), default=-1)
    return depth


def _downloads(widget_values: list) -> dict:
    """``{"models": [...]}`` for the widget values that name a file of ``DOWNLOADS``, else ``{}``."""
    models = [{"name": v, "url": DOWNLOADS[v][1], "directory": DOWNLOADS[v][0]}
              for v in widget_values if isinstance(v, str) and v in DOWNLOADS]
    return {"models": models} if models else {}


def ui_from_api(api: dict, schemas: dict) -> dict:
    """The UI-format graph of an API workflow, laid out in columns by graph depth."""
    links, nodes, outgoing = [], [], {}
    for node_id, node in api.items():
        for spec in schemas[node_id].inputs:
            value = node["inputs"].get(spec.id)
            if is_link(value):
                link_id = len(links) + 1
                source_type = schemas[value[0]].outputs[value[1]].io_type
                links.append([link_id, int(value[0]), value[1], int(node_id), None, source_type])
                outgoing.setdefault((value[0], value[1]), []).append(link_id)
    depth, rows = _depths(api), {}
    for order, node_id in enumerate(Executor.order(api)):
        schema, inputs = schemas[node_id], api[node_id]["inputs"]
        sockets, values = [], []
        for spec in schema.inputs:
            value = inputs.get(spec.id)
            is_widget = spec.get_io_type() in WIDGETS
            if is_link(value):
                link = next(l for l in links if l[3] == int(node_id) and l[4] is None
                            and l[1] == int(value[0]) and l[2] == value[1])
                link[4] = len(sockets)
                socket = {"name": spec.id, "type": spec.get_io_type(), "link": link[0]}
                sockets.append(socket | ({"widget": {"name": spec.id}} if is_widget else {}))
            elif not is_widget:
                sockets.append({"name": spec.id, "type": spec.get_io_type(), "link": None})
            if is_widget:
                values.append(spec.default if is_link(value) or value is None else value)
                if getattr(spec, "control_after_generate", None):
                    values.append(CONTROL_AFTER_GENERATE)
        row = rows.setdefault(depth[node_id], 0)
        rows[depth[node_id]] += 1
        nodes.append({
            "id": int(node_id), "type": schema.node_id, "pos": [40 + 380 * depth[node_id], 40 + 300 * row],
            "size": [340, 120 + 26 * len(values)], "flags": {}, "order": order, "mode": 0,
            "inputs": sockets,
            "outputs": [{"name": out.display_name or out.io_type, "type": out.io_type,
                         "links": outgoing.get((node_id, slot), []), "slot_index": slot}
                        for slot, out in enumerate(schema.outputs)],
            "properties": {"Node name for S&R": schema.node_id} | _downloads(values),
            "widgets_values": values,
        })
    return {"last_node_id": max(int(n) for n in api), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def api_from_ui(ui: dict, schemas_by_type: dict) -> dict:
    """The API-format graph of a UI workflow, reading widget values through the node schemas."""
    links = {link[0]: link for link in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        schema = schemas_by_type[node["type"]]
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


def main(api_path: str) -> None:
    """Write ``X.json`` (UI format) beside ``X_api.json``."""
    import comfy_env

    api_file = Path(api_path)
    api = json.loads(api_file.read_text())
    classes = {cls.GET_SCHEMA().node_id: cls for cls in comfy_env.node_classes()}
    schemas = {nid: classes[node["class_type"]].GET_SCHEMA() for nid, node in api.items()}
    ui_file = api_file.with_name(api_file.name.replace("_api.json", ".json"))
    ui_file.write_text(json.dumps(ui_from_api(api, schemas), indent=2) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main(sys.argv[1])
