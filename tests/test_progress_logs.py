"""Progress bars belong on a terminal; a log gets one line per epoch (issue #27).

``neurodelay train ... 2> log`` used to write every bar refresh into the log (~37 kB of
bar frames for a 10-epoch tiny run). The bars are now drawn only when stderr is a
terminal (``neurodelay.progress``); ``NEURODELAY_PROGRESS=always`` draws them anyway, which
is how the second test shows the first one can fail.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from neurodelay import progress

BAR_MARKS = ("\r", "%|", "batch/s", "sample/s", "it/s")


def _train_log(tmp_path, data, env_extra=None) -> str:
    env = {k: v for k, v in os.environ.items() if k != progress.ENV}
    env.update(NEURODELAY_CACHE=str(tmp_path / "cache"), **(env_extra or {}))
    log = tmp_path / "train.log"
    with open(log, "w") as fh:
        p = subprocess.run([sys.executable, "-m", "neurodelay", "train", "--out",
                            str(tmp_path / "run"), "--train-file", str(data["train"]),
                            "--test-file", str(data["test"]), "--hidden", "8", "--epochs",
                            "3", "--batch-size", "16", "--threads", "1"],
                           stdout=subprocess.DEVNULL, stderr=fh, env=env, timeout=300)
    assert p.returncode == 0, log.read_text()
    return log.read_text()


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_task):
    return tiny_task(tmp_path_factory.mktemp("progress"))


def test_a_log_gets_one_line_per_epoch_and_no_bar_frames(tmp_path, data):
    text = _train_log(tmp_path, data)
    epochs = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 3, text
    for mark in BAR_MARKS:
        assert mark not in text, f"bar frame {mark!r} in the log:\n{text}"
    assert len(text) < 2000, f"{len(text)} bytes of log for 3 epochs:\n{text}"


def test_bars_are_drawn_where_asked(tmp_path, data):
    text = _train_log(tmp_path, data, {progress.ENV: "always"})
    assert "%|" in text and "batch" in text


def test_on_terminal_follows_the_override(monkeypatch):
    monkeypatch.setenv(progress.ENV, "never")
    assert progress.on_terminal() is False
    monkeypatch.setenv(progress.ENV, "always")
    assert progress.on_terminal() is True
