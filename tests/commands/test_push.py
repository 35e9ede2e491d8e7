"""`livecue push`: verify, write the card, upload exactly the model's files with huggingface_hub (its HfApi replaced
by a recorder here: this machine has no hub), and one line for every way the hub can be out of reach."""

import types

import pytest

from livecue import cli
from livecue.model.card import CARD_FILE
from livecue.model.load import save_checkpoint

MODEL_FILES = ["README.md", "livecue_config.json", "livecue_manifest.json", "livecue_model.safetensors",
               "tokenizer.json", "tokenizer_config.json"]


@pytest.fixture
def checkpoint(tiny, tmp_path):
    """A checkpoint laid out as a training run's (manifest, training state), plus files that must not be pushed."""
    import json

    from livecue.train.checkpoint import write_manifest

    ckpt = save_checkpoint(*tiny, tmp_path / "checkpoint-2")
    (ckpt / "state").mkdir()
    (ckpt / "state" / "optimizer.bin").write_bytes(b"optimizer state")
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 2, "epoch": 0, "micro": 2}))
    (ckpt / ".cache").mkdir()
    (ckpt / ".cache" / "x").write_text("hidden")
    (ckpt / ".DS_Store").write_text("hidden")
    write_manifest(ckpt, {"format": "livecue-model", "format_version": 1, "step": 2})
    return ckpt


class FakeApi:
    """huggingface_hub.HfApi's calls push makes, recorded; upload_folder selects files as the real one does."""

    calls: list = []

    def __init__(self, token=None):
        self.calls.append(("init", token))

    def create_repo(self, repo_id, *, private=None, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private, exist_ok))
        return types.SimpleNamespace(repo_id=repo_id)

    def create_branch(self, repo_id, *, branch, exist_ok=False):
        self.calls.append(("create_branch", repo_id, branch, exist_ok))

    def upload_folder(self, *, repo_id, folder_path, revision=None, commit_message=None, allow_patterns=None):
        from pathlib import Path

        from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
        from huggingface_hub.utils import filter_repo_objects

        root = Path(folder_path)
        every = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        chosen = list(filter_repo_objects(every, allow_patterns=allow_patterns,
                                          ignore_patterns=list(DEFAULT_IGNORE_PATTERNS)))
        card = (root / CARD_FILE).read_text()
        self.calls.append(("upload_folder", repo_id, revision, commit_message, chosen, card))
        return types.SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/abc123")


@pytest.fixture
def hub(monkeypatch):
    """An online hub with a token, whose HfApi records what push asks of it."""
    import huggingface_hub
    from huggingface_hub import constants

    FakeApi.calls = []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_saved")
    return FakeApi.calls


def test_push_uploads_exactly_the_model_files_with_its_card(checkpoint, hub, capsys):
    rc = cli.main(["push", str(checkpoint), "me/tiny-live", "--private", "--revision", "v1",
                   "--commit-message", "first"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert hub[:3] == [("init", "hf_saved"), ("create_repo", "me/tiny-live", True, True),
                       ("create_branch", "me/tiny-live", "v1", True)]
    _, repo, revision, message, files, card = hub[3]
    assert (repo, revision, message) == ("me/tiny-live", "v1", "first")
    assert files == MODEL_FILES  # no state/, trainer_state.json or hidden files; the card among them
    assert 'load_model("me/tiny-live")' in card and "livecue watch video.mp4 --model me/tiny-live" in card
    assert card == (checkpoint / CARD_FILE).read_text()  # what was pushed is what the directory now holds
    assert out.splitlines()[-1] == "pushed 6 files to https://huggingface.co/me/tiny-live/commit/abc123"


def test_push_token_option_and_default_message(checkpoint, hub):
    assert cli.main(["push", str(checkpoint), "tiny-live", "--token", "hf_given"]) == 0
    assert hub[0] == ("init", "hf_given") and hub[1] == ("create_repo", "tiny-live", None, True)
    assert [c[0] for c in hub] == ["init", "create_repo", "upload_folder"]  # no --revision: no branch
    assert hub[2][3] == "Upload livecue model tiny"


def test_dry_run_lists_the_files_and_contacts_no_hub(checkpoint, hub, capsys):
    assert cli.main(["push", str(checkpoint), "me/x", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"{checkpoint}: a valid livecue checkpoint (tiny); model card README.md refreshed; 6 files to "
                      f"upload")
    assert [line.strip() for line in out[1:]] == MODEL_FILES and hub == []


def test_a_hand_written_card_is_pushed_as_written(checkpoint, hub):
    (checkpoint / CARD_FILE).write_text("---\nlicense: mit\n---\n# Mine\n")
    assert cli.main(["push", str(checkpoint), "me/x"]) == 0
    assert hub[-1][5] == "---\nlicense: mit\n---\n# Mine\n"


def test_a_broken_checkpoint_is_never_pushed(checkpoint, hub, capsys):
    weights = checkpoint / "livecue_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert cli.main(["push", str(checkpoint), "me/x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "livecue_model.safetensors" in err and hub == []


@pytest.mark.parametrize("args,message", [
    (["DIR", "a/b/c"], "REPO_ID 'a/b/c' is not a hub repository id: Repo id must be in the form"),
    (["DIR", "bad name"], "REPO_ID 'bad name' is not a hub repository id"),
    (["missing-dir", "me/x"], "'missing-dir' does not exist (DIR must be a livecue checkpoint directory)"),
])
def test_bad_arguments_are_one_line(checkpoint, hub, capsys, args, message):
    args = [str(checkpoint) if a == "DIR" else a for a in args]
    assert cli.main(["push", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("livecue push: error: ") and message in err and err.count("\n") == 1 and hub == []


# ---- the hub out of reach: one line each, the card still written ---------------------------------------------------
def test_offline(checkpoint, capsys):
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE  # tests run with HF_HUB_OFFLINE=1 (conftest)
    (checkpoint / CARD_FILE).unlink()
    assert cli.main(["push", str(checkpoint), "me/x"]) == 1
    err = capsys.readouterr().err
    assert err == (f"livecue push: error: the hub is offline here (HF_HUB_OFFLINE is set): unset it to push (the "
                   f"model card is written in {checkpoint})\n")
    assert 'load_model("me/x")' in (checkpoint / CARD_FILE).read_text()


def test_no_token(checkpoint, monkeypatch, capsys):
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert cli.main(["push", str(checkpoint), "me/x"]) == 1
    assert capsys.readouterr().err == ("livecue push: error: no Hugging Face token: pass --token, set HF_TOKEN, or "
                                       "run `hf auth login` (it needs write access)\n")


def test_unreachable_hub(checkpoint, monkeypatch, capsys):
    """The real huggingface_hub against an endpoint where nothing listens."""
    import socket

    from huggingface_hub import constants

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    assert cli.main(["push", str(checkpoint), "me/x", "--token", "hf_x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"livecue push: error: cannot reach the hub at http://127.0.0.1:{port} (")
    assert err.endswith("): check the network or HF_ENDPOINT\n") and err.count("\n") == 1


@pytest.mark.parametrize("status,message", [
    (401, "the hub refused the token for 'me/x' (HTTP 401): check --token / HF_TOKEN / `hf auth login`, and that "
          "the token may write to that namespace"),
    (500, "the hub refused the push to 'me/x' (HTTP 500): Internal error"),
])
def test_hub_http_errors(checkpoint, hub, monkeypatch, capsys, status, message):
    from huggingface_hub.errors import HfHubHTTPError

    def refuse(self, repo_id, **kwargs):
        response = types.SimpleNamespace(status_code=status, headers={}, request=None)
        raise HfHubHTTPError("Internal error\nmore lines", response=response)

    monkeypatch.setattr(FakeApi, "create_repo", refuse)
    assert cli.main(["push", str(checkpoint), "me/x"]) == 1
    assert capsys.readouterr().err == f"livecue push: error: {message}\n"
