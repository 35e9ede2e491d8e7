"""--kv-pool / --attention / --compile on the commands that run an engine: the same events as the default engine,
and one line where the model or the combination cannot take them."""

import json

import pytest

from livecue import cli


def _events(path):
    return [(e["type"], e["t"], e.get("text"), round(e.get("p_silence", 0.0), 4))
            for e in map(json.loads, path.read_text().splitlines())]


def test_watch_with_the_kv_pool_equals_the_default(tmp_path):
    common = ["watch", "sample:bikes", "--model", "tiny", "--max-frames", "6", "--threshold", "0.9",
              "--query", "What do you see?", "--at", "1.2", "--max-reply-tokens", "3", "--quiet"]
    assert cli.main([*common, "--jsonl", str(tmp_path / "a.jsonl")]) == 0
    assert cli.main([*common, "--kv-pool", "--jsonl", str(tmp_path / "b.jsonl")]) == 0
    assert cli.main([*common, "--attention", "padded", "--jsonl", str(tmp_path / "c.jsonl")]) == 0
    ref = _events(tmp_path / "a.jsonl")
    assert len(ref) == 7 and "answer" in {e[0] for e in ref}
    assert _events(tmp_path / "b.jsonl") == ref
    assert _events(tmp_path / "c.jsonl") == ref


def test_bench_records_the_fast_path(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--model", "tiny", "--frames", "4", "--window", "2", "--speak-every", "1",
                     "--reply-tokens", "2", "--overhead-frames", "0", "--kv-pool", "--json", str(out)]) == 0
    env = json.loads(out.read_text())["environment"]
    assert env["fast_path"]["kv_pool"] is True and env["fast_path"]["compile"] is False


@pytest.mark.parametrize("args, message", [
    (["--compile", "--attention", "loop"], "a compiled step attends with flex"),
    (["--model", "tiny_gemma3", "--compile"], "--compile: .* sliding-window or bidirectional attention"),
])
def test_fast_path_refusals_are_one_line(args, message, capsys):
    rc = cli.main(["watch", "sample:bikes", "--model", "tiny", "--max-frames", "1", "--quiet", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len([line for line in err if "livecue" in line]) >= 1
    import re

    assert re.search(message, err[-1]), err
    assert "Traceback" not in "\n".join(err)
