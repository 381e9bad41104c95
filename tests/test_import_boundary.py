"""The runtime must never pull in the converter or its heavy dependencies."""

import subprocess
import sys

BLOCK_AND_IMPORT = r"""
import importlib, importlib.abc, pkgutil, sys

FORBIDDEN = ("torch", "nncf", "onnx", "onnxruntime", "converter")

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError(f"{name} is not installed in this environment")
        return None

sys.meta_path.insert(0, Block())
import vtn_edge
for mod in pkgutil.walk_packages(vtn_edge.__path__, "vtn_edge."):
    if not mod.name.endswith("__main__"):
        importlib.import_module(mod.name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
print("LOADED", loaded)
"""


def test_runtime_imports_without_torch_nncf_onnx():
    out = subprocess.run([sys.executable, "-c", BLOCK_AND_IMPORT], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout


def test_plain_import_loads_no_heavy_modules():
    code = "import sys, vtn_edge; print(sorted(m for m in ('torch','nncf','onnx','converter') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
