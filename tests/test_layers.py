"""Dependencies point one way: library layers never import the demo (not even inside a function or
under ``TYPE_CHECKING``); the demo plugs its loaders in through ``lipforcing_core.registry``, and the
ComfyUI nodes load the demo's code only when a demo file or node is used."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "lipforcing_core"
LIBRARY = ("models", "sampling", "vae", "audio", "face", "syncnet", "training", "pipeline", "checkpoints",
           "video", "config", "registry")
FORBIDDEN = "lipforcing_core.demo"


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports anywhere (top level, functions, conditionals)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def library_files() -> list[Path]:
    files = []
    for name in LIBRARY:
        target = CORE / name
        files += sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]
    return files


def demo_imports(path: Path) -> list[str]:
    return sorted(n for n in imported_modules(path) if n == FORBIDDEN or n.startswith(FORBIDDEN + "."))


def test_every_library_layer_is_checked():
    files = library_files()
    assert all(f.is_file() for f in files) and len(files) > 30


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(CORE)))
def test_library_never_imports_the_demo(path):
    assert demo_imports(path) == [], f"{path.relative_to(ROOT)} imports the demo layer"


@pytest.mark.parametrize("source", [
    "from ..demo.sync_model import SmallSyncNet\n",
    "def load():\n    from ..demo import recipe\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lipforcing_core.demo.recipe import WEIGHTS_DIR\n",
    "import lipforcing_core.demo.train as t\n",
    "from .. import demo\n",
])
def test_the_check_catches_a_demo_import(tmp_path, monkeypatch, source):
    """The same check fails for a library module that imports the demo in any of these ways."""
    fake_root = tmp_path / "repo"
    module = fake_root / "lipforcing_core" / "syncnet" / "model.py"
    module.parent.mkdir(parents=True)
    module.write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    assert demo_imports(module) != []


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_load_syncnet_opens_the_demo_file_through_a_lazy_plugin():
    """A front end names the demo's loader module; it is imported at the first lookup, not before."""
    out = run_python("""
        import sys
        from lipforcing_core.demo.constants import LOADERS_MODULE, SYNCNET_FILE
        from lipforcing_core.registry import add_plugin
        from lipforcing_core.syncnet import load_syncnet
        add_plugin(LOADERS_MODULE)
        assert LOADERS_MODULE not in sys.modules
        print(type(load_syncnet(SYNCNET_FILE)).__name__)
    """)
    assert out == "SmallSyncNet"


def test_without_the_plugin_the_demo_file_is_refused_by_name():
    out = run_python("""
        from lipforcing_core.checkpoints import CheckpointError
        from lipforcing_core.demo.constants import SYNCNET_FILE
        from lipforcing_core.syncnet import load_syncnet
        try:
            load_syncnet(SYNCNET_FILE)
        except CheckpointError as err:
            print(err)
    """)
    assert "describes no syncnet model" in out and "demo_syncnet.safetensors" in out


def test_nodes_start_up_without_the_demo_code():
    """ComfyUI start-up (import the pack, call its entry point, read every node's schema) loads no demo
    module but the import-free constants."""
    out = run_python("""
        import sys, tempfile
        from pathlib import Path
        sys.path.insert(0, "tests")
        import comfy_env
        comfy_env.use_base(Path(tempfile.mkdtemp()))
        schemas = [cls.GET_SCHEMA() for cls in comfy_env.node_classes()]
        assert any(s.node_id == "LipForcingDemoClip" for s in schemas)
        print(sorted(m for m in sys.modules if m.startswith("lipforcing_core.demo")))
    """)
    assert out == "['lipforcing_core.demo', 'lipforcing_core.demo.constants']"
