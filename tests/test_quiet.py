"""Quiet, clean output: while a command runs, the CLI hides the known-benign third-party messages it lists (peft's
tie-weights warning, transformers' "Loading weights" bar, accelerate's "Removed shared tensor" for a tied head) and
nothing else; ``livecue -v COMMAND`` and ``LIVECUE_VERBOSE=1`` show them."""

import io
import logging
import os
import subprocess
import sys
import warnings

import pytest
import torch

from livecue import cli
from livecue.cli import quiet_third_party, verbose_from_env

TIE_WARNING = ("Model has `tie_word_embeddings=True` and a tied layer is part of the adapter, but "
               "`ensure_weight_tying` is not set to True. This can lead to complications, for example when merging "
               "the adapter or converting your model to formats other than safetensors. Check the discussion here: "
               "https://github.com/huggingface/peft/issues/2777")


# ---- a real source of the messages, through the console script ------------------------------------------------------
@pytest.fixture(scope="module")
def tied_checkpoint(tmp_path_factory):
    """A livecue checkpoint over a tiny pretrained-layout Llama whose head is tied to its embeddings, with LoRA on
    the head (as the default model's SmolLM2): loading it runs transformers' from_pretrained ("Loading weights" bar)
    and peft's injection on a tied head (the tie-weights warning)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from livecue.model.load import load_model, save_checkpoint
    from livecue.model.lora import apply_lora
    from livecue.model.tiny_tokenizer import ASSET_DIR

    root = tmp_path_factory.mktemp("tied")
    vocab = len(AutoTokenizer.from_pretrained(str(ASSET_DIR)))
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(root / "lm")
    (root / "model.yaml").write_text(f"base: tiny\nlm:\n  name_or_path: {root / 'lm'}\n  random_init: null\n"
                                     "  tokenizer: tiny\n")
    model, tokenizer = load_model(root / "model.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft's warning, here in the test's own process
        apply_lora(model)
    assert "lm_head" in {name.split(".")[0] for name, _ in model.lm.named_modules() if "lora_A" in name}
    return save_checkpoint(model, tokenizer, root / "checkpoint")


def livecue(*args: str, **env: str) -> subprocess.CompletedProcess:
    """``python -m livecue.cli ARGS`` with none of the switches that change third-party output set, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if k not in (
        "LIVECUE_VERBOSE", "LIVECUE_DEBUG", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY",
        "PYTHONWARNINGS", "TQDM_DISABLE")}
    return subprocess.run([sys.executable, "-m", "livecue.cli", *args], capture_output=True, text=True,
                          env={**base, **env}, timeout=600)


def test_benign_messages_are_hidden_by_default_and_shown_with_verbose(tied_checkpoint):
    quiet = livecue("info", "--model", str(tied_checkpoint))
    assert quiet.returncode == 0, quiet.stderr
    assert "Loading weights" not in quiet.stderr and "tie_word_embeddings" not in quiet.stderr
    assert "github.com" not in quiet.stderr and "Warning" not in quiet.stderr
    assert "LlamaForCausalLM" in quiet.stdout  # the command itself ran and printed its output

    for loud in (livecue("-v", "info", "--model", str(tied_checkpoint)),
                 livecue("info", "--model", str(tied_checkpoint), LIVECUE_VERBOSE="1")):
        assert loud.returncode == 0, loud.stderr
        assert "Loading weights" in loud.stderr and "100%" in loud.stderr
        assert f"UserWarning: {TIE_WARNING}" in loud.stderr
        assert loud.stdout == quiet.stdout  # only stderr noise differs


# ---- each kind of message, in this process ------------------------------------------------------------------------
def test_only_the_listed_warnings_are_ignored():
    def shown(message: str, category: type[Warning], module: str) -> bool:
        with warnings.catch_warnings(record=True) as seen:
            warnings.resetwarnings()  # no filters but the ones under test: everything else is shown
            with quiet_third_party():
                warnings.warn_explicit(message, category, "x.py", 1, module=module)
        return len(seen) == 1

    assert not shown(TIE_WARNING, UserWarning, "peft.tuners.tuners_utils")
    assert shown(TIE_WARNING, UserWarning, "livecue.model.lora")  # the same words from elsewhere
    assert shown(TIE_WARNING, FutureWarning, "peft.tuners.tuners_utils")  # another category
    assert shown("You have requested `ensure_weight_tying`, but no tied modules were found in the model",
                 UserWarning, "peft.tuners.tuners_utils")  # another peft warning
    assert shown("Failed to initialize NumPy: _ARRAY_API not found (Triggered internally at ...)", UserWarning,
                 "torch.nn.modules.transformer")  # a real installation problem: never hidden
    with warnings.catch_warnings(record=True) as seen:
        warnings.resetwarnings()
        with quiet_third_party():
            pass
        warnings.warn_explicit(TIE_WARNING, UserWarning, "x.py", 1, module="peft.tuners.tuners_utils")
    assert len(seen) == 1  # the filters are gone once the command has run


def test_the_loading_bar_is_hidden_and_no_other_bar():
    import huggingface_hub.utils as hub
    import transformers.utils.logging as tlog

    if not tlog.is_progress_bar_enabled():
        pytest.skip("transformers' progress bars are disabled in this environment (HF_HUB_DISABLE_PROGRESS_BARS)")
    out = io.StringIO()
    with quiet_third_party():
        hidden = tlog.tqdm(range(3), desc="Loading weights", file=out)
        kept = tlog.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors...", file=out)
        assert hidden.disable and not kept.disable  # (a bar that has ended is disabled: checked before)
        assert list(hidden) == [0, 1, 2] and list(kept) == [0, 1, 2]
        assert not hub.are_progress_bars_disabled()  # hub downloads keep their bars
    assert "Loading weights" not in out.getvalue() and "GGUF" in out.getvalue()
    after = tlog.tqdm(range(1), desc="Loading weights", file=out)
    assert not after.disable  # restored once the command has run
    list(after)
    assert "Loading weights" in out.getvalue()


def test_accelerate_shared_tensor_log_only_for_a_tied_head(caplog):
    from accelerate import PartialState
    from accelerate.utils.other import clean_state_dict_for_safetensors

    PartialState()  # accelerate's logger needs its state
    def logged(names: tuple[str, str], quiet: bool) -> bool:
        caplog.clear()
        shared = torch.zeros(4, 2)
        state = dict.fromkeys(names, shared)  # two names, one tensor (as a tied head and its embeddings)
        with caplog.at_level(logging.WARNING, logger="accelerate"):
            if quiet:
                with quiet_third_party():
                    clean_state_dict_for_safetensors(state)
            else:
                clean_state_dict_for_safetensors(state)
        return any("Removed shared tensor" in r.getMessage() for r in caplog.records)

    head = ("lm.model.embed_tokens.weight", "lm.lm_head.base_layer.weight")
    assert logged(head, quiet=False) and not logged(head, quiet=True)
    assert logged(("vision.a.weight", "vision.b.weight"), quiet=True)  # not a tied head: shown
    assert logged(head, quiet=False)  # the filter is gone once the command has run


def test_a_library_is_set_up_when_it_is_imported_not_before(tmp_path, monkeypatch):
    from livecue.cli import _AfterImport

    (tmp_path / "quiet_probe_a.py").write_text("VALUE = 1\n")
    (tmp_path / "quiet_probe_b.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    pending = _AfterImport("quiet_probe_a", seen.append)
    assert seen == [] and pending in sys.meta_path  # nothing imported by the CLI itself
    import quiet_probe_a

    assert seen == [quiet_probe_a] and quiet_probe_a.VALUE == 1 and pending not in sys.meta_path
    assert quiet_probe_a.__loader__.get_source("quiet_probe_a") == "VALUE = 1\n"  # the own loader's methods
    _AfterImport("quiet_probe_a", seen.append)  # already imported: at once
    assert seen == [quiet_probe_a, quiet_probe_a]
    cancelled = _AfterImport("quiet_probe_b", seen.append)
    cancelled.remove()
    import quiet_probe_b  # noqa: F401

    assert len(seen) == 2
    with quiet_third_party():
        pass
    assert not [f for f in sys.meta_path if isinstance(f, _AfterImport)]  # nothing left behind by a command


# ---- the switch ---------------------------------------------------------------------------------------------------
def test_verbose_switch(monkeypatch, capsys):
    for value, expected in (("1", True), ("true", True), ("", False), ("0", False), ("no", False)):
        monkeypatch.setenv("LIVECUE_VERBOSE", value)
        assert verbose_from_env() is expected
    monkeypatch.delenv("LIVECUE_VERBOSE")
    assert cli.main(["-v", "--help"]) == 0 and "-v, --verbose" in capsys.readouterr().out
    assert cli.main(["--verbose", "config", "tiny"]) == 0  # taken by livecue, not passed to the command
    assert '"name": "tiny"' in capsys.readouterr().out

    ran = []
    monkeypatch.setattr(cli, "quiet_third_party", lambda: ran.append(1) or quiet_third_party())
    assert cli.main(["config", "tiny"]) == 0 and ran == [1]
    assert cli.main(["-v", "config", "tiny"]) == 0 and ran == [1]
    monkeypatch.setenv("LIVECUE_VERBOSE", "1")
    assert cli.main(["config", "tiny"]) == 0 and ran == [1]


def test_help_stays_light_with_the_switch():
    code = ("import sys, livecue.cli; livecue.cli.main(['-v', '--help']); livecue.cli.main(['--help']); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import at start-up'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_torchao_import_noise_only(caplog):
    """torchao's import lines (GPU-only kernels that cannot load here; its enums' pytree registration) are hidden;
    another torchao warning, e.g. a kernel livecue would use, is shown."""
    def logged(logger: str, message: str, quiet: bool) -> bool:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=logger):
            if quiet:
                with quiet_third_party():
                    logging.getLogger(logger).warning(message)
            else:
                logging.getLogger(logger).warning(message)
        return any(r.getMessage() == message for r in caplog.records)

    cutlass = "Failed to load /venv/site-packages/torchao/_C_cutlass_90a.abi3.so: Could not load this library"
    mxfp8 = "Failed to load /venv/site-packages/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: Could not load"
    enum = ("<enum 'KernelPreference'> is an Enum subclass and is now natively supported by torch.compile as an "
            "opaque value type.")
    for logger, message in (("torchao", cutlass), ("torchao", mxfp8), ("torch.utils._pytree", enum)):
        assert logged(logger, message, quiet=False) and not logged(logger, message, quiet=True)
    assert logged("torchao", "Failed to load /venv/site-packages/torchao/_C.abi3.so: missing symbol", quiet=True)
