"""What importing costs: ``import compressors`` and the CLI's report/query never import torch (nor numba).

Each check runs in a fresh interpreter, so nothing another test imported counts.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


def modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    return set(out.stdout.split())


def test_import_compressors_registers_every_codec_without_torch():
    loaded = modules_after("import compressors; assert {'autoencoder', 'kmeans', 'jpeg'} <= set(compressors.CODECS)")
    assert "torch" not in loaded and "compressors.autoencoder" in loaded
    assert "numba" not in loaded  # the SSIM kernel compiles on the first ssim() call, not on import


@pytest.mark.parametrize("args", [["--help"], ["compress", "--help"], ["report", "{dest}", "--json"],
                                  ["query", "{dest}", "SELECT count(*) AS n FROM reports", "--json"]])
def test_the_cli_answers_without_torch_or_prefect(args, tmp_path):
    args = [a.replace("{dest}", str(tmp_path)) for a in args]
    code = (
        "from typer.testing import CliRunner\nfrom imgpress.cli import app\n"
        f"r = CliRunner().invoke(app, {args!r})\nassert r.exit_code in (0, 1), r.output"
    )
    loaded = modules_after(code)
    assert "torch" not in loaded
    assert "prefect" not in loaded


def test_the_autoencoder_still_codes_once_torch_is_needed():
    import numpy as np

    from compressors import get_codec

    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    codec = get_codec("autoencoder")
    assert codec.decode(codec.encode(image, quality=1)).shape == image.shape
