import subprocess
import sys

import lipforcing_core


def test_every_public_name_resolves():
    for name in lipforcing_core.__all__:
        assert getattr(lipforcing_core, name) is not None, name


def test_package_import_is_lazy():
    """Importing the package must not pull in torch-heavy submodules (ComfyUI start-up cost)."""
    code = "import sys, lipforcing_core; print(any(m.startswith('lipforcing_core.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
