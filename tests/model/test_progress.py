"""Training progress: a live tqdm bar on a terminal, plain lines (never carriage returns) in a log."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from model.progress import Progress
from tests.model.conftest import TINY

ROOT = Path(__file__).resolve().parents[2]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_one_line_per_tenth_and_one_at_the_end() -> None:
    out = io.StringIO()
    bar = Progress(1000, "epoch 1/2", out)
    for done in [*range(0, 1000, 7), 1000]:
        bar.update(done, 1.5)
    bar.close(0.75)
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 10  # 10 %, ..., 90 % while running, then the final line
    assert all(line.startswith("epoch 1/2:") for line in lines)
    assert "10%" in lines[0] and "loss 1.5000" in lines[0]
    assert "100%" in lines[-1] and "1.00k/1.00k" in lines[-1] and "loss 0.7500" in lines[-1]


def test_a_terminal_gets_a_redrawn_tqdm_bar() -> None:
    out = _Terminal()
    bar = Progress(1000, "epoch 1/2", out, every=0)
    for done in range(0, 1001, 100):
        bar.update(done, 1.5)
    bar.close(0.75)
    text = out.getvalue()
    assert text.count("\r") >= 5  # redrawn in place
    assert text.endswith("\n")
    assert "100%|##########|" in text and "loss 0.7500" in text.rsplit("\r", 1)[-1]


def test_training_with_stderr_in_a_file_writes_readable_lines(
    tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(TINY.model_copy(update={"epochs": 2}).model_dump_json())
    log = tmp_path / "train.log"
    with log.open("w") as err:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "model.cli",
                "train",
                "--train",
                str(tiny_data["train"]),
                "--valid",
                str(tiny_data["valid"]),
                "--out",
                str(tmp_path / "model"),
                "--config",
                str(config),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=300,
            check=False,
        )
    assert proc.returncode == 0, log.read_text()[-2000:]
    text = log.read_text()
    assert "\r" not in text
    lines = [line for line in text.splitlines() if line.startswith("epoch ")]
    # A handful of lines per epoch (one per tenth at most, and the last), each under a terminal's width.
    for epoch in (1, 2):
        mine = [line for line in lines if line.startswith(f"epoch {epoch}/2:")]
        assert 1 <= len(mine) <= 10, text
        assert "100%" in mine[-1] and "loss " in mine[-1]
    assert all(len(line) < 120 for line in lines)
