"""``livecue push DIR REPO_ID``: publish a livecue checkpoint, with its model card, to the Hugging Face Hub.

1. The checkpoint is verified first (:func:`livecue.model.load.check_checkpoint_files`: config, weights readable
   and finite, LoRA adapter complete, sizes and sha256 against its manifest, tokenizer): nothing broken is published.
2. Its model card (``README.md``, :mod:`livecue.model.card`) is written or refreshed from its files, naming the
   repository as the way to load it; a hand-written card (without livecue's marker line) is kept as it is.
3. ``huggingface_hub``: ``HfApi.create_repo(exist_ok=True)`` (``--private``), ``create_branch`` for
   ``--revision``, then ``upload_folder`` of what the model needs: every file but the training state (``state/``,
   ``trainer_state.json``) and hidden files.

Offline (``HF_HUB_OFFLINE``), no token, a refused token or an unreachable hub: one line, exit status 1 (the card is
still written). ``--dry-run`` stops after step 2 and lists the files it would upload.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from ._common import parser


def main(argv: list[str]) -> int:
    p = parser("push", "Publish a livecue checkpoint (weights, tokenizer, config, model card) to the Hugging Face "
                       "Hub: verify it, write its model card, upload it.", epilog=None)
    p.add_argument("directory", help="a livecue checkpoint directory (a training run's final/ or checkpoint-N/), "
                                     "or 'default' for the packaged default model")
    p.add_argument("repo_id", help="the hub repository: NAME or NAMESPACE/NAME (created when missing)")
    p.add_argument("--private", action="store_true", help="create the repository private (an existing one keeps "
                                                          "its visibility)")
    p.add_argument("--token", default=None, help="a hub token with write access (default: HF_TOKEN or the token "
                                                 "saved by `hf auth login`)")
    p.add_argument("--revision", default=None, help="the branch to push to (created from main when missing; "
                                                    "default: main)")
    p.add_argument("--commit-message", default=None, help="default: 'Upload livecue model <name>'")
    p.add_argument("--dry-run", action="store_true", help="verify, write the card and list the files; upload "
                                                          "nothing")
    args = p.parse_args(argv)

    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(args.repo_id)
    except ValueError as e:
        raise ValueError(f"REPO_ID {args.repo_id!r} is not a hub repository id: {str(e).split(': ')[0]}") from None
    directory = checkpoint_directory(args.directory)

    from ..model.card import CARD_FILE
    from ..model.card_files import refresh_card
    from ..model.load import check_checkpoint_files

    cfg = check_checkpoint_files(directory)
    card = "refreshed" if refresh_card(directory, model_ref=args.repo_id) else "kept (hand-written)"
    files = upload_files(directory)
    print(f"{directory}: a valid livecue checkpoint ({cfg.name}); model card {CARD_FILE} {card}; {len(files)} files "
          f"to upload")
    if args.dry_run:
        print("\n".join(f"  {f}" for f in files))
        return 0
    url = upload(directory, files, args.repo_id, token=args.token, private=args.private, revision=args.revision,
                 message=args.commit_message or f"Upload livecue model {cfg.name}")
    print(f"pushed {len(files)} files to {url}")
    return 0


def checkpoint_directory(source: str) -> Path:
    """The checkpoint directory ``source`` names (``default``: the packaged default model); one line otherwise."""
    from ..model.load import DEFAULT_ALIAS, DEFAULT_MODEL_DIR

    path = Path(source)
    if source == DEFAULT_ALIAS and not path.exists():
        return DEFAULT_MODEL_DIR
    if not path.exists():
        raise FileNotFoundError(f"{source!r} does not exist (DIR must be a livecue checkpoint directory)")
    if not path.is_dir():
        raise ValueError(f"{source!r} is not a directory (DIR must be a livecue checkpoint directory)")
    return path


def upload_files(directory: Path) -> list[str]:
    """The files of a checkpoint a model repository gets: all but the training state (``state/``,
    ``trainer_state.json``: for resuming, not for using the model) and hidden files; sorted, ``/``-separated."""
    from ..train.manifest import STATE_DIR, STATE_FILE

    files = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if rel.parts[0] == STATE_DIR or rel.as_posix() == STATE_FILE:
            continue
        files.append(rel.as_posix())
    return files


def upload(directory: Path, files: list[str], repo_id: str, *, token: str | None, private: bool,
           revision: str | None, message: str) -> str:
    """Create the repository (and branch) when missing and upload exactly ``files`` in one commit; returns the
    commit's URL. Raises ``OSError`` with one line when offline, without a token, or when the hub fails."""
    import huggingface_hub
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise OSError("the hub is offline here (HF_HUB_OFFLINE is set): unset it to push (the model card is "
                      f"written in {directory})")
    token = token or huggingface_hub.get_token()
    if not token:
        raise OSError("no Hugging Face token: pass --token, set HF_TOKEN, or run `hf auth login` (it needs write "
                      "access)")
    api = huggingface_hub.HfApi(token=token)
    try:
        repo = api.create_repo(repo_id, private=private or None, exist_ok=True)
        if revision:
            api.create_branch(repo.repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(repo_id=repo.repo_id, folder_path=str(directory), revision=revision,
                                   commit_message=message, allow_patterns=[glob.escape(f) for f in files])
    except Exception as e:  # noqa: BLE001 - whatever the hub or the network raises becomes one line
        raise OSError(hub_failure(e, repo_id, constants.ENDPOINT)) from None
    return str(getattr(commit, "commit_url", None) or repo)


def hub_failure(error: Exception, repo_id: str, endpoint: str) -> str:
    """One line for a failed hub call: offline, a refused token, another HTTP answer, or no connection."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    if isinstance(error, OfflineModeIsEnabled):
        return "the hub is offline here (HF_HUB_OFFLINE is set): unset it to push"
    if isinstance(error, HfHubHTTPError):
        status: Any = getattr(getattr(error, "response", None), "status_code", None)
        if status in (401, 403):
            return (f"the hub refused the token for {repo_id!r} (HTTP {status}): check --token / HF_TOKEN / "
                    f"`hf auth login`, and that the token may write to that namespace")
        return f"the hub refused the push to {repo_id!r} (HTTP {status}): {reason}"
    return (f"cannot reach the hub at {endpoint} ({type(error).__name__}: {reason}): check the network or "
            f"HF_ENDPOINT")
