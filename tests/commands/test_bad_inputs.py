"""The bad-input corpus (tests/bad_input_corpus.py): every case exits with its code and ONE error line naming the
value, never a traceback, never a hang, and any JSON it writes is strict.

Cases run in-process through ``livecue.cli.main`` (a subprocess costs seconds of torch import each); a few run the
real ``livecue`` console script. ``serve`` cases must fail before a socket is bound.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from bad_input_corpus import Case, all_cases, build

from livecue import cli

TIMEOUT_S = 60  # per case: a hang fails the case instead of the run
ERROR_LINE = re.compile(r"^livecue[^\n]*?: error: ")
CASES = all_cases()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    build(root)
    return root


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"no answer within {TIMEOUT_S} s")


def _strict(name: str):
    raise ValueError(f"non-strict JSON constant {name}")


def check_output(case: Case, code: int, out: str, err: str, root: Path) -> None:
    """The global assertions every case must satisfy."""
    fragment = case.fragment.replace("{d}", str(root))
    assert "Traceback" not in out + err, f"{case.id}: traceback\n{err[-3000:]}"
    assert code == case.code, f"{case.id}: exit {code}, expected {case.code}\n{err[-2000:]}"
    errors = [line for line in err.splitlines() if ERROR_LINE.match(line)]
    if case.code == 0:
        assert not errors, f"{case.id}: {errors}"
        assert fragment in err, f"{case.id}: {fragment!r} not in stderr\n{err[-2000:]}"
    else:
        assert len(errors) == 1, f"{case.id}: expected one error line, got {errors}\n{err[-2000:]}"
        assert fragment in errors[0], f"{case.id}: {fragment!r} not in {errors[0]!r}"
    if case.code == 2:  # a refused option: that one line is all (no usage block), and it points to --help
        assert err.strip().splitlines() == errors and "--help)" in errors[0], f"{case.id}: {err!r}"
    if case.jsonl:
        lines = (root / case.jsonl).read_text(encoding="utf-8").splitlines()
        assert lines, f"{case.id}: {case.jsonl} is empty"
        for line in lines:
            json.loads(line, parse_constant=_strict)


def test_corpus_size():
    assert len(CASES) >= 100 and len({c.id for c in CASES}) == len(CASES)
    for command in ("watch", "demo", "info", "eval", "train", "encode", "convert-data", "serve"):
        assert sum(c.argv[0] == command for c in CASES) >= 5, command


@pytest.fixture
def no_socket(monkeypatch):
    """``serve`` must refuse bad options before it binds a socket or starts uvicorn."""
    import livecue.commands.serve as serve

    def refuse(*args, **kwargs):
        raise AssertionError("serve bound a socket despite a bad option")

    monkeypatch.setattr(serve, "bind", refuse)
    try:
        import uvicorn

        monkeypatch.setattr(uvicorn.Server, "run", refuse)
    except ImportError:
        pass


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, corpus: Path, capsys, no_socket, monkeypatch):
    monkeypatch.delenv("LIVECUE_DEBUG", raising=False)
    monkeypatch.delenv("LIVECUE_TOKEN", raising=False)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIMEOUT_S)
    try:
        code = cli.main(case.args(corpus))
    except SystemExit as e:  # argparse
        code = e.code
    except Hang:
        pytest.fail(f"{case.id}: hung (no answer within {TIMEOUT_S} s)")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    captured = capsys.readouterr()
    check_output(case, code, captured.out, captured.err, corpus)


SCRIPT_CASES = ["watch-fps-nan", "info-bad-yaml", "convert-coin-broken-json"]


def test_console_script(corpus: Path):
    """A few cases through the real ``livecue`` console script, in parallel: the same exit code and one line."""
    script = Path(sys.executable).with_name("livecue")
    if not script.is_file():
        pytest.skip("the livecue console script is not installed next to this Python")
    env = {k: v for k, v in os.environ.items() if k != "LIVECUE_DEBUG"}
    chosen = [c for c in CASES if c.id in SCRIPT_CASES]
    procs = [subprocess.Popen([str(script), *c.args(corpus)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for c in chosen]
    for case, proc in zip(chosen, procs):
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"{case.id}: the console script hung")
        check_output(case, proc.returncode, out, err, corpus)


def test_last_resort_net_is_one_line(capsys, monkeypatch):
    """An unexpected exception from a command is one line naming its type, exit 1; LIVECUE_DEBUG re-raises it."""
    import livecue.commands.info as info

    def boom(argv):
        raise RuntimeError("something deep broke\n  with a second line")

    monkeypatch.setattr(info, "main", boom)
    assert cli.main(["info"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("livecue info: error: RuntimeError: something deep broke (set LIVECUE_DEBUG=1 for the "
                   "traceback)")
    monkeypatch.setenv("LIVECUE_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli.main(["info"])


def test_multi_line_messages_are_joined(capsys, monkeypatch):
    import livecue.commands.info as info

    def multi(argv):
        raise ValueError("first part\nsecond part")

    monkeypatch.setattr(info, "main", multi)
    assert cli.main(["info"]) == 1
    assert capsys.readouterr().err.strip() == "livecue info: error: first part second part"
