"""The open-answer judge (livecue.eval.online.judge): an OpenAI-compatible endpoint (a stub server on 127.0.0.1
that records requests and sends canned replies), a tiny local LM, the JSONL cache and the --judge spec."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from livecue.eval.online.judge import (
    PROACTIVE,
    PROMPT_VERSION,
    CachedJudge,
    JudgeError,
    LocalJudge,
    OpenAIJudge,
    judge_from_spec,
    judge_messages,
    parse_score,
)

KEY = "sk-test-SECRET-0123456789"


class Stub:
    """An OpenAI chat-completions stub: each POST pops the next canned ``(status, content)`` (the last one repeats),
    after ``delay`` seconds; every request is recorded (path, headers, JSON body)."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, str]] = [(200, "Score: 4")]
        self.requests: list[dict] = []
        self.delay = 0.0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                time.sleep(stub.delay)
                status, content = stub.replies.pop(0) if len(stub.replies) > 1 else stub.replies[0]
                if content.startswith("RAW:"):  # a body that is not a chat completion
                    raw = content[4:].encode()
                elif status == 200:
                    data = {"id": "x", "object": "chat.completion", "model": body["model"],
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": content}}]}
                    raw = json.dumps(data).encode()
                else:  # an error body echoing the Authorization header, as a careless server might
                    raw = json.dumps({"error": {"message": f"{content} ({self.headers.get('Authorization')})"}}
                                     ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server = Stub()
    yield server
    server.close()


def fast_judge(base_url: str, **kw) -> OpenAIJudge:
    return OpenAIJudge(base_url, model="judge-model", **{"timeout": 5.0, "max_retries": 2, "backoff": 0.01, **kw})


# ---- parsing --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reply, score", [
    ("Score: 4", 0.8), ("score:5", 1.0), ("Score: 0", 0.0), ("SCORE = 3", 0.6), ("I'd say 2/5.", 0.4),
    ("The answer is close. Score: 3", 0.6), ("Score: 7", 1.0), ("Score: -2", 0.0), ("Score: 2.5", 0.5),
    ("**Score:** 1", 0.2), ("Yes", 1.0), ("yes, it matches", 1.0), ("No.", 0.0), ("  no", 0.0),
])
def test_parse_score(reply, score):
    assert parse_score(reply) == pytest.approx(score)


@pytest.mark.parametrize("reply", ["", "I cannot judge this.", "The answers differ", "nothing", "Notably wrong"])
def test_parse_score_unparsable(reply):
    assert parse_score(reply) is None


def test_prompt_holds_the_three_texts_and_the_format():
    system, user = judge_messages(" What colour? ", "red", "It is red.")
    assert system["role"] == "system" and user["role"] == "user"
    assert "Question: What colour?\nReference answer: red\nCandidate answer: It is red." in user["content"]
    assert "Score: N" in user["content"]


# ---- the OpenAI-compatible endpoint ----------------------------------------------------------------------------------
def test_openai_judge_asks_the_endpoint_and_parses_the_score(stub):
    judge = fast_judge(stub.base_url)
    assert judge.judge("What colour is the square?", "red", "It is red") == pytest.approx(0.8)
    (req,) = stub.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {KEY}"
    body = req["body"]
    assert body["model"] == "judge-model" and body["temperature"] == 0 and body["max_tokens"] == 16
    assert body["messages"] == judge_messages("What colour is the square?", "red", "It is red")
    assert KEY not in judge.name and judge.name == f"openai:judge-model@{stub.base_url}"


def test_openai_judge_by_the_proactive_rubric(stub):
    """ProactiveVideoQA's judge: its 3-point prompt and input layout; "2" of 1-3 reads (2 − 1) / 2; an unparsable
    reply gives no score (None) under it, 0 under the default rubric."""
    stub.replies = [(200, "2")]
    judge = fast_judge(stub.base_url)
    assert judge.grade("What is it?", " A red car. ", "a car", "proactive") == 0.5
    (req,) = stub.requests
    assert req["body"]["messages"] == PROACTIVE.messages("What is it?", "A red car.", "a car")
    assert req["body"]["messages"][1]["content"] == (
        "Question: What is it?\nGround Truth Answer: A red car.\nPredicted Answer: a car")
    stub.replies = [(200, "I am not sure.")]
    assert judge.grade("What is it?", "A red car.", "a bus", "proactive") is None
    assert judge.judge("What is it?", "A red car.", "a bus") == 0.0 and judge.unparsable == 2


def test_base_url_from_the_environment_and_no_key_when_unset(stub, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/never")
    monkeypatch.setenv("LIVECUE_JUDGE_BASE_URL", stub.base_url)  # wins over OPENAI_BASE_URL
    assert OpenAIJudge(model="m", backoff=0).judge("q", "a", "a") == pytest.approx(0.8)
    assert "Authorization" not in stub.requests[0]["headers"]


def test_unparsable_reply_scores_zero_and_is_counted(stub):
    stub.replies = [(200, "I am not sure what you mean.")]
    judge = fast_judge(stub.base_url)
    assert judge.judge("q", "red", "blue") == 0.0
    verdict = judge.verdict("q", "red", "green")
    assert (verdict.score, verdict.parsed, verdict.reply) == (0.0, False, "I am not sure what you mean.")
    assert judge.unparsable == 2


def test_empty_answer_scores_zero_without_asking(stub):
    assert fast_judge(stub.base_url).judge("q", "red", "  ") == 0.0
    assert stub.requests == []


def test_server_error_then_success_is_retried(stub):
    stub.replies = [(500, "overloaded"), (503, "busy"), (200, "Score: 5")]
    assert fast_judge(stub.base_url).judge("q", "red", "red") == 1.0
    assert len(stub.requests) == 3


def test_persistent_server_error_is_one_line_without_the_key(stub):
    stub.replies = [(500, "internal error")]
    with pytest.raises(JudgeError) as err:
        fast_judge(stub.base_url, max_retries=1).judge("q", "red", "red")
    text = str(err.value)
    assert len(stub.requests) == 2
    assert "\n" not in text and KEY not in text
    assert f"{stub.base_url}/chat/completions" in text and "after 2 attempt(s)" in text and "HTTP 500" in text


def test_auth_error_fails_at_once_naming_the_variable_not_the_key(stub):
    stub.replies = [(401, "Incorrect API key provided")]
    with pytest.raises(JudgeError) as err:
        fast_judge(stub.base_url).judge("q", "red", "red")
    text = str(err.value)
    assert len(stub.requests) == 1  # a client error is not retried
    assert "HTTP 401" in text and "Incorrect API key provided" in text and "$OPENAI_API_KEY" in text
    assert KEY not in text and "\n" not in text


def test_dead_port_is_one_clear_line_within_the_timeout(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    judge = OpenAIJudge(f"http://127.0.0.1:{port}/v1", model="m", timeout=1.0, max_retries=1, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(JudgeError) as err:
        judge.judge("q", "red", "red")
    assert time.monotonic() - start < 10  # bounded: 2 attempts of at most 1 s each, not a hang
    text = str(err.value)
    assert "\n" not in text and KEY not in text
    assert f"http://127.0.0.1:{port}/v1/chat/completions" in text and "after 2 attempt(s)" in text


def test_a_silent_server_times_out(stub):
    stub.delay = 3.0
    judge = fast_judge(stub.base_url, timeout=0.3, max_retries=1)
    start = time.monotonic()
    with pytest.raises(JudgeError, match=r"no reply within 0.3 s"):
        judge.judge("q", "red", "red")
    assert time.monotonic() - start < 2.5  # well before the server would have answered


def test_malformed_response_is_one_line(stub):
    stub.replies = [(200, "RAW:<html>not json</html>")]
    with pytest.raises(JudgeError, match="malformed chat-completions response") as err:
        fast_judge(stub.base_url).judge("q", "red", "red")
    assert "\n" not in str(err.value) and len(stub.requests) == 1


# ---- the cache ------------------------------------------------------------------------------------------------------
def test_cache_asks_once_across_instances_and_never_stores_the_key(stub, tmp_path):
    path = tmp_path / "judge_cache.jsonl"
    cached = CachedJudge(fast_judge(stub.base_url), path)
    assert cached.judge("q", "red", "It is red") == pytest.approx(0.8)
    assert cached.judge("q", "red", "It is red") == pytest.approx(0.8)
    assert len(stub.requests) == 1 and (cached.hits, cached.misses) == (1, 1)

    again = CachedJudge(fast_judge(stub.base_url), path)  # a rerun reading the same file
    assert again.judge("q", "red", "It is red") == pytest.approx(0.8)
    assert len(stub.requests) == 1 and (again.hits, again.misses) == (1, 0)
    assert again.judge("q", "red", "It is blue") == pytest.approx(0.8)  # another answer is asked
    assert len(stub.requests) == 2

    text = path.read_text()
    assert KEY not in text
    first = json.loads(text.splitlines()[0])
    assert first["judge"] == f"openai:judge-model@{stub.base_url}" and first["prompt"] == PROMPT_VERSION
    assert (first["score"], first["parsed"], first["reply"]) == (pytest.approx(0.8), True, "Score: 4")


def test_cache_is_keyed_by_the_judge(stub, tmp_path):
    path = tmp_path / "c.jsonl"
    CachedJudge(fast_judge(stub.base_url), path).judge("q", "red", "red")
    other = OpenAIJudge(stub.base_url, model="another-model", backoff=0.01)
    CachedJudge(other, path).judge("q", "red", "red")
    assert [r["body"]["model"] for r in stub.requests] == ["judge-model", "another-model"]


def test_cache_records_unparsable_verdicts(stub, tmp_path):
    stub.replies = [(200, "hmm")]
    path = tmp_path / "c.jsonl"
    assert CachedJudge(fast_judge(stub.base_url), path).judge("q", "red", "blue") == 0.0
    entry = json.loads(path.read_text())
    assert (entry["score"], entry["parsed"], entry["reply"]) == (0.0, False, "hmm")
    assert CachedJudge(fast_judge(stub.base_url), path).judge("q", "red", "blue") == 0.0
    assert len(stub.requests) == 1


def test_cache_tolerates_a_truncated_last_line_and_appends_after_it(stub, tmp_path):
    path = tmp_path / "c.jsonl"
    CachedJudge(fast_judge(stub.base_url), path).judge("q", "red", "red")
    with path.open("a") as f:
        f.write('{"key": "abc", "judge": "openai:judge-mo')  # a run killed mid-write
    resumed = CachedJudge(fast_judge(stub.base_url), path)
    assert resumed.judge("q", "red", "red") == pytest.approx(0.8)  # the complete line still counts
    assert resumed.judge("q", "red", "crimson") == pytest.approx(0.8)
    assert len(stub.requests) == 2
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and lines[1].startswith('{"key": "abc"')
    third = CachedJudge(fast_judge(stub.base_url), path)  # the truncated line is skipped, the new one read
    assert third.judge("q", "red", "crimson") == pytest.approx(0.8) and len(stub.requests) == 2


def test_cache_sees_lines_another_process_appended(stub, tmp_path):
    path = tmp_path / "c.jsonl"
    a = CachedJudge(fast_judge(stub.base_url), path)
    b = CachedJudge(fast_judge(stub.base_url), path)  # opened before a writes
    a.judge("q", "red", "red")
    b.judge("q", "red", "red")
    assert len(stub.requests) == 1 and b.hits == 1


def test_cache_wraps_any_judge(tmp_path):
    class Exact:
        name = "exact"
        calls = 0

        def judge(self, question, reference, answer):
            Exact.calls += 1
            return float(reference == answer)

    path = tmp_path / "c.jsonl"
    assert CachedJudge(Exact(), path).judge("q", "red", "red") == 1.0
    assert CachedJudge(Exact(), path).judge("q", "red", "red") == 1.0
    assert Exact.calls == 1


# ---- the --judge spec -----------------------------------------------------------------------------------------------
def test_judge_from_spec(tmp_path, monkeypatch):
    monkeypatch.delenv("LIVECUE_JUDGE_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert judge_from_spec("none") is None
    j = judge_from_spec("openai:gpt-4o-mini")
    assert isinstance(j, OpenAIJudge) and j.model == "gpt-4o-mini"
    assert j.url == "https://api.openai.com/v1/chat/completions"
    j = judge_from_spec("openai:qwen2.5-7b@http://127.0.0.1:8000/v1/")
    assert j.url == "http://127.0.0.1:8000/v1/chat/completions" and j.model == "qwen2.5-7b"
    j = judge_from_spec("openai:m@http://user:pw@host:1/v1")
    assert "pw" not in j.name and "pw" not in j.endpoint and j.name == "openai:m@http://host:1/v1"
    j = judge_from_spec("local:/some/model", device="cpu")
    assert isinstance(j, LocalJudge) and j.name == "local:/some/model" and j.model is None  # loads lazily
    cached = judge_from_spec("openai:m@http://127.0.0.1:1/v1", cache=tmp_path / "c.jsonl")
    assert isinstance(cached, CachedJudge) and cached.name == "openai:m@http://127.0.0.1:1/v1"


@pytest.mark.parametrize("spec, message", [
    ("gpt-4o", "--judge must be openai:MODEL"), ("claude:x", "--judge must be"), ("none:x", "--judge must be"),
    ("openai:", "needs a model name"), ("openai:@http://h/v1", "needs a model name"),
    ("openai:m@127.0.0.1:8000", "must start with http:// or https://"), ("local:", "needs a model directory"),
])
def test_judge_from_spec_errors(spec, message):
    with pytest.raises(ValueError, match=message) as err:
        judge_from_spec(spec)
    assert "\n" not in str(err.value)


# ---- a local LM ------------------------------------------------------------------------------------------------------
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tiny_judge_dir(tmp_path_factory):
    """A tiny random Llama with the packaged tiny tokenizer and a ChatML chat template, saved as a directory."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from livecue.model.tiny_tokenizer import ASSET_DIR

    root = tmp_path_factory.mktemp("judge_lm")
    tok = AutoTokenizer.from_pretrained(str(ASSET_DIR))
    tok.chat_template = CHATML
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(root)
    tok.save_pretrained(root)
    return root


def test_local_judge_runs_and_uses_the_cache(tiny_judge_dir, tmp_path):
    local = LocalJudge(str(tiny_judge_dir), device="cpu", max_new_tokens=4)
    cached = CachedJudge(local, tmp_path / "c.jsonl")
    score = cached.judge("What colour is the square?", "red", "It is red")
    assert isinstance(score, float) and 0.0 <= score <= 1.0
    assert local.model is not None and cached.misses == 1

    def refuse(*args, **kwargs):
        raise AssertionError("the cached verdict must not run the model")

    local.model.generate = refuse
    assert cached.judge("What colour is the square?", "red", "It is red") == score
    assert CachedJudge(local, tmp_path / "c.jsonl").judge("What colour is the square?", "red", "It is red") == score
    entry = json.loads((tmp_path / "c.jsonl").read_text())
    assert entry["judge"] == f"local:{tiny_judge_dir.resolve()}"


def test_local_judge_reply_is_parsed_like_any_other(tiny_judge_dir, monkeypatch):
    local = LocalJudge(str(tiny_judge_dir), device="cpu", max_new_tokens=4)
    local.load()
    seen = {}
    real = local.tokenizer.apply_chat_template

    def spy(messages, **kw):
        seen["messages"] = messages
        return real(messages, **kw)

    monkeypatch.setattr(local.tokenizer, "apply_chat_template", spy)
    monkeypatch.setattr(local.tokenizer, "decode", lambda *a, **k: "Score: 2")
    assert local.judge("q", "red", "pink") == pytest.approx(0.4)
    assert seen["messages"] == judge_messages("q", "red", "pink")


def test_local_judge_errors_are_one_line(tmp_path, tiny_judge_dir):
    with pytest.raises(OSError, match="cannot load the judge model") as err:
        LocalJudge(str(tmp_path / "missing"), device="cpu").judge("q", "red", "red")
    assert "\n" not in str(err.value)
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(tiny_judge_dir, plain)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(ValueError, match="has no chat template"):
        LocalJudge(str(plain), device="cpu").load()
