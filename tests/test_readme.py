"""The README's shell blocks, run in order as a new user would, at a smaller scale, so the docs
cannot drift from the code. A block that cannot run here says why in a `readme-test: skip` comment
right above it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

from conftest import ROOT

README = ROOT / "README.md"
BLOCK = re.compile(r"(?:<!-- readme-test: skip \((?P<why>[^)]*)\) -->\n)?```sh\n(?P<body>.*?)```", re.S)
# smaller counts, same commands: what each block does is what is tested, not how long it takes
SMALLER = (
    (r"--clips-per-class \d+", "--clips-per-class 2"),  # 2: enough held-out clips for the build's check
    (r"--streams \d+ --stream-seconds \d+", "--streams 1 --stream-seconds 12"),
    (r"--epochs \d+", "--epochs 1"),
    (r"(vtn_edge bench \S+)", r"\1 --frames 60"),
    # 20 or more decisive clips, so that one flip alone does not fail the 95% tolerance (the real
    # command verifies on 60)
    (r"(converter build .*?--out \S+)", r"\1 --verify-clips 24"),
)


@dataclass(frozen=True)
class Block:
    line: int
    body: str
    skip_reason: str | None


def readme_blocks() -> list[Block]:
    text = README.read_text()
    return [Block(text.count("\n", 0, m.start("body")) + 1, m["body"], m["why"]) for m in BLOCK.finditer(text)]


def smaller(body: str) -> str:
    body = body.replace("\\\n", " ")
    for pattern, replacement in SMALLER:
        body = re.sub(pattern, replacement, body)
    return body


def test_every_block_runs_or_says_why_not_and_stays_inside_the_repository():
    blocks = readme_blocks()
    assert len(blocks) >= 6
    skipped = [b for b in blocks if b.skip_reason is not None]
    assert all(b.skip_reason.strip() for b in skipped)
    assert len(skipped) <= 3, [b.line for b in skipped]  # most of the README runs
    for block in blocks:
        if block.skip_reason is None:
            assert "../" not in block.body, f"README.md:{block.line} uses a file outside the repository"
            commands = re.sub(r"#.*", "", block.body)
            assert not re.search(r"\[--|\b[A-Z]{4,}\b", commands), f"README.md:{block.line} has placeholders"
    # the scaling rules really apply to the blocks they are for
    runnable = "\n".join(smaller(b.body) for b in blocks if b.skip_reason is None)
    assert "--clips-per-class 2" in runnable and "--epochs 1" in runnable and "--frames 60" in runnable


def test_readme_blocks_run_in_order(tmp_path):
    """Everything the README tells a new user to type, in a fresh folder beside the repository's
    shipped models and scripts (a copy, so nothing the commands write lands in the checkout)."""
    shutil.copytree(ROOT / "ir_models", tmp_path / "ir_models")
    for folder in ("examples", "benchmarks"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    # as after `. .venv/bin/activate`: `python` is the environment the tests run in
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    for block in readme_blocks():
        if block.skip_reason is not None:
            continue
        done = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + smaller(block.body)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, f"README.md:{block.line} failed:\n{done.stderr[-3000:]}"
    assert (tmp_path / "build" / "vtn-int8" / "model.json").is_file()
    assert (tmp_path / "cm.png").is_file() and (tmp_path / "sweep.png").is_file()
    events = (tmp_path / "events.jsonl").read_text().splitlines()
    assert events and len(list((tmp_path / "snapshots").glob("*.jpg"))) >= 1  # the monitor ran to the end
