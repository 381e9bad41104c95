"""Parameter and GMAC counts against REFERENCE 4 (within 2%)."""

import subprocess
import sys

import pytest

pytest.importorskip("torch")

from converter.complexity import complexity  # noqa: E402
from converter.config import VTNConfig  # noqa: E402
from converter.models.vtn import build_vtn  # noqa: E402

# part -> (params M, GMAC); None where the reference gives no figure
REFERENCE = {
    "resnet34": {"encoder": (21.28, 3.663), "decoder": (7.56, 0.122)},
    "mobilenetv2": {"encoder": (None, 0.300), "decoder": (7.56, 0.122)},
}


@pytest.mark.parametrize("arch", sorted(REFERENCE))
def test_counts_match_reference(arch):
    rows = {r.part.split()[0]: r for r in complexity(build_vtn(VTNConfig(arch=arch, num_classes=400)))}
    for part, (params, gmac) in REFERENCE[arch].items():
        if params is not None:
            assert rows[part].params_m == pytest.approx(params, rel=0.02)
        assert rows[part].gmac == pytest.approx(gmac, rel=0.02)
    # the paper's per-frame figure: one encoder pass plus one decoder pass (0.4 / 3.77 GMAC)
    paper = {"resnet34": 3.77, "mobilenetv2": 0.42}[arch]
    assert rows["total"].gmac == pytest.approx(paper, rel=0.02)


def test_info_cli_prints_table():
    out = subprocess.run(
        [sys.executable, "-m", "converter", "info", "--arch", "resnet34"], capture_output=True, text=True, check=True
    ).stdout
    assert "| encoder (per frame)  | 21.28      | 3.663 |" in out


def test_info_cli_rejects_unknown_arch():
    out = subprocess.run([sys.executable, "-m", "converter", "info", "--arch", "vgg"], capture_output=True, text=True)
    assert out.returncode == 2 and "mobilenetv2" in out.stderr
