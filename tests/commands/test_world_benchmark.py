"""`livecue world --benchmark B`: the world's test streams written as an online-video benchmark that `load_items`
(and so `livecue eval --task B`) reads back."""

from pathlib import Path

import pytest

from livecue import cli
from livecue.eval.online.formats import load_items


@pytest.mark.parametrize("benchmark", ["ovo", "streamingbench", "proactive"])
def test_world_as_a_benchmark(benchmark, tmp_path, capsys):
    rc = cli.main(["world", "--out", str(tmp_path), "--n", "2", "--seed", "3", "--benchmark", benchmark,
                   "--resolution", "32", "--duration", "8"])
    assert rc == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    anno = line.split(" data: ")[1].split(" (")[0]
    items = load_items(benchmark, anno)
    assert items and all(item.benchmark == benchmark and Path(item.video).is_file() for item in items)
    assert f"livecue eval --task {benchmark} --data {anno}" in line


@pytest.mark.parametrize("extra, words", [(["--resume"], "--resume applies to plain world streams"),
                                          (["--format", "npy"], "use --format mp4")])
def test_options_that_do_not_apply_are_refused(extra, words, tmp_path, capsys):
    rc = cli.main(["world", "--out", str(tmp_path), "--n", "1", "--seed", "3", "--benchmark", "ovo", *extra])
    assert rc != 0 and words in capsys.readouterr().err
