"""`import xcnn` is light (no torch) and gives its subpackages on first use."""
from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
import xcnn

assert "torch" not in sys.modules, "import xcnn alone imported torch"
assert "xcnn.models" not in sys.modules
lm = xcnn.models.load("resnet18", weights="random")
assert lm.categories[281] == "tabby" and xcnn.data.load_image is not None
try:
    xcnn.nothing
except AttributeError as err:
    assert "no attribute 'nothing'" in str(err)
else:
    raise AssertionError("xcnn.nothing did not raise AttributeError")
print("OK")
"""


def test_import_xcnn_is_light_and_gives_subpackages() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "OK", result.stderr[-3000:]


def test_version_is_the_installed_distributions() -> None:
    # Records carry xcnn.__version__; it must not drift from the version pip installed.
    from importlib.metadata import version

    import xcnn

    assert xcnn.__version__ == version("xcnn")
