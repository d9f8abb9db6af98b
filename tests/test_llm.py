"""LLM concept generation against a local fake OpenAI-compatible server (no real network)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.ceir import llm
from core.ceir.concept_bank import read_concept_file
from core.ceir.llm import (
    LLMError,
    LLMSettings,
    ask_concepts,
    clean_concept_line,
    generate_bank,
    parse_concept_list,
    settings_from_env,
)

GOOD_ANSWERS = {
    "features": 'Here are some features:\n1. Pointed ears\n2) Whiskers.\n- **Long tail**\n* "Fur"\n\n',
    "superclasses": "• Mammal\n• Pet\n• cat\n",
    "around": "- sofa: where it sleeps\n- Whiskers\n- a long description that goes on for many words\n",
}


class FakeServer:
    """A chat-completions endpoint whose behaviour (``mode``) a test chooses; it records every request."""

    def __init__(self) -> None:
        self.mode = "good"
        self.requests: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                owner.requests.append(
                    {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
                )
                owner.reply(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def reply(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        if self.mode == "slow":
            time.sleep(1.0)
            with contextlib.suppress(OSError):  # the client has given up and closed the socket
                self._send(handler, 200, b"{}")
        elif self.mode == "error500":
            self._send(handler, 500, b"model overloaded, try later " + b"x" * 1000)
        elif self.mode == "not_json":
            self._send(handler, 200, b"<html>gateway page</html>")
        elif self.mode == "no_choices":
            self._send(handler, 200, json.dumps({"object": "chat.completion"}).encode())
        else:
            question = body["messages"][1]["content"]
            kind = next(
                k for k, prompt in llm.PROMPTS.items() if question.startswith(prompt.split("{cls}")[0])
            )
            if self.mode == "fail_second_class" and "dog" in question:
                self._send(handler, 500, b"boom")
                return
            reply = {
                "choices": [{"index": 0, "message": {"role": "assistant", "content": GOOD_ANSWERS[kind]}}]
            }
            self._send(handler, 200, json.dumps(reply).encode())

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    yield fake
    fake.close()


def settings_for(server: FakeServer, key: str | None = None, timeout: float = 5.0) -> LLMSettings:
    return LLMSettings(url=server.url, api_key=key, model="tiny-model", timeout=timeout)


EXPECTED_CAT = {
    "features": ["pointed ears", "whiskers", "long tail", "fur"],
    "superclasses": ["mammal", "pet", "cat"],
    "around": ["sofa", "whiskers"],
}


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


def test_settings_from_env():
    env = {"CONCEPTLENS_LLM_URL": " http://localhost:8000/v1 ", "CONCEPTLENS_LLM_MODEL": "m"}
    assert settings_from_env(env) == LLMSettings("http://localhost:8000/v1", None, "m", 30.0)
    env["CONCEPTLENS_LLM_KEY"] = "secret"
    assert settings_from_env(env).api_key == "secret"


@pytest.mark.parametrize(
    "env",
    [{}, {"CONCEPTLENS_LLM_URL": "http://x/v1"}, {"CONCEPTLENS_LLM_MODEL": "m"}],
)
def test_settings_from_env_missing(env):
    with pytest.raises(ValueError, match="set CONCEPTLENS_LLM_URL .* and CONCEPTLENS_LLM_MODEL"):
        settings_from_env(env)


def test_settings_from_env_bad_scheme():
    with pytest.raises(ValueError, match="must start with http"):
        settings_from_env({"CONCEPTLENS_LLM_URL": "localhost:8000", "CONCEPTLENS_LLM_MODEL": "m"})


def test_settings_from_process_environment(monkeypatch):
    monkeypatch.setenv("CONCEPTLENS_LLM_URL", "https://api.example/v1")
    monkeypatch.setenv("CONCEPTLENS_LLM_MODEL", "big")
    monkeypatch.delenv("CONCEPTLENS_LLM_KEY", raising=False)
    assert settings_from_env() == LLMSettings("https://api.example/v1", None, "big")


# ---------------------------------------------------------------------------------------------
# Parsing replies
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        ("1. Pointed ears", "pointed ears"),
        ("12) Whiskers.", "whiskers"),
        ("(3) long tail;", "long tail"),
        ("- **Striped fur**", "striped fur"),
        ("\u2022 \u201cSharp claws\u201d", "sharp claws"),
        ("a) short legs", "short legs"),
        ("*   'mane'!", "mane"),
        ("Fur: soft and thick", "fur"),
        ("wheels \u2014 usually four", "wheels"),
        ("Here are the features:", None),
        ("   ", None),
        ("- ", None),
        ("one two three four five six seven", None),
        ("x" * 61, None),
        ("C# code", "c"),
        ("left-facing head", "left-facing head"),
    ],
)
def test_clean_concept_line(line, expected):
    assert clean_concept_line(line) == expected


def test_parse_concept_list_order_and_repeats():
    assert parse_concept_list("1. Fur\r\n2. fur\n3. Paws\n\nSure!:\n") == ["fur", "paws"]


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------


def test_ask_concepts_good_reply_and_request_body(server):
    answers = ask_concepts(settings_for(server, key="sk-test"), "  cat ")
    assert answers == EXPECTED_CAT
    assert len(server.requests) == 3
    for request, kind in zip(server.requests, ("features", "superclasses", "around"), strict=True):
        assert request["path"] == "/v1/chat/completions"
        assert request["auth"] == "Bearer sk-test"
        body = request["body"]
        assert body["model"] == "tiny-model"
        assert body["temperature"] == 0
        assert [m["role"] for m in body["messages"]] == ["system", "user"]
        assert body["messages"][0]["content"] == llm.SYSTEM_PROMPT
        assert body["messages"][1]["content"] == llm.PROMPTS[kind].format(cls="cat")
        assert "a cat" in body["messages"][1]["content"]


def test_ask_concepts_without_key_sends_no_authorization(server):
    answers = ask_concepts(settings_for(server), "cat", kinds=("around",))
    assert answers == {"around": EXPECTED_CAT["around"]}
    assert [r["auth"] for r in server.requests] == [None]


def test_ask_concepts_trailing_slash_in_url(server):
    settings = settings_for(server)
    settings.url += "/"
    ask_concepts(settings, "cat", kinds=("features",))
    assert server.requests[0]["path"] == "/v1/chat/completions"


def test_ask_concepts_rejects_bad_arguments(server):
    with pytest.raises(ValueError, match="Unknown concept kind 'colours'"):
        ask_concepts(settings_for(server), "cat", kinds=("features", "colours"))
    with pytest.raises(ValueError, match="non-empty"):
        ask_concepts(settings_for(server), "  ")
    assert server.requests == []


def test_http_500_is_one_sentence_with_body_snippet(server):
    server.mode = "error500"
    with pytest.raises(LLMError, match=r"answered HTTP 500: 'model overloaded, try later x+'\.$") as info:
        ask_concepts(settings_for(server), "cat")
    assert len(str(info.value)) < 400  # the 1000-character body is cut short


def test_reply_not_json(server):
    server.mode = "not_json"
    with pytest.raises(LLMError, match=r"not JSON: '<html>gateway page</html>'"):
        ask_concepts(settings_for(server), "cat")


def test_reply_without_choices(server):
    server.mode = "no_choices"
    with pytest.raises(LLMError, match=r"no choices\[0\]\.message\.content"):
        ask_concepts(settings_for(server), "cat")


def test_timeout_is_reported_quickly(server):
    server.mode = "slow"
    start = time.monotonic()
    with pytest.raises(LLMError, match=r"did not answer within 0\.3 s"):
        ask_concepts(settings_for(server, timeout=0.3), "cat")
    assert time.monotonic() - start < 0.9


def test_connection_refused():
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = LLMSettings(url=f"http://127.0.0.1:{port}/v1", api_key=None, model="m", timeout=2.0)
    with pytest.raises(LLMError, match="Connection refused by http://127.0.0.1:.*/v1/chat/completions"):
        ask_concepts(settings, "cat")


# ---------------------------------------------------------------------------------------------
# Generating a bank
# ---------------------------------------------------------------------------------------------


def test_generate_bank_writes_a_parsable_bank(server, tmp_path):
    out = tmp_path / "generated.txt"
    calls: list[tuple[int, int]] = []
    bank = generate_bank(
        settings_for(server), ["cat", "dog"], out, progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(1, 2), (2, 2)]
    # merged over kinds and classes, first-seen order, repeats and the class name "cat" removed
    assert bank.concepts == ["pointed ears", "whiskers", "long tail", "fur", "mammal", "pet", "sofa"]
    assert bank.source == str(out)
    assert "'cat' is a class name, dropped" in bank.issues
    assert read_concept_file(out).concepts == bank.concepts
    text = out.read_text(encoding="utf-8")
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert "tiny-model" in header[0] and header[1].startswith("# for 2 classes: cat, dog")
    assert text.splitlines()[len(header) :] == bank.concepts
    assert len(server.requests) == 6


def test_generate_bank_writes_nothing_when_a_request_fails(server, tmp_path):
    server.mode = "fail_second_class"
    out = tmp_path / "generated.txt"
    with pytest.raises(LLMError, match="HTTP 500"):
        generate_bank(settings_for(server), ["cat", "dog"], out)
    assert list(tmp_path.iterdir()) == []


def test_generate_bank_keeps_existing_file_on_failure(server, tmp_path):
    server.mode = "not_json"
    out = tmp_path / "generated.txt"
    out.write_text("previous\n", encoding="utf-8")
    with pytest.raises(LLMError):
        generate_bank(settings_for(server), ["cat"], out)
    assert out.read_text(encoding="utf-8") == "previous\n"


def test_generate_bank_rejects_empty_class_list(server, tmp_path):
    with pytest.raises(ValueError, match="class_names"):
        generate_bank(settings_for(server), [], tmp_path / "x.txt")
    assert server.requests == []


def test_concepts_generate_command_uses_the_environment(server, tmp_path, monkeypatch, capsys):
    from core.cli import main

    settings = settings_for(server)
    monkeypatch.setenv("CONCEPTLENS_LLM_URL", settings.url)
    monkeypatch.setenv("CONCEPTLENS_LLM_MODEL", settings.model)
    classes = tmp_path / "classes.txt"
    classes.write_text("# two classes\ncat\ndog\n")
    out = tmp_path / "bank.txt"
    assert main(["concepts", "generate", "--classes", str(classes), "--out", str(out)]) == 0
    assert "whiskers" in read_concept_file(out).concepts
    assert main(["concepts", "show", str(out)]) == 0
    assert "whiskers" in capsys.readouterr().out.splitlines()
