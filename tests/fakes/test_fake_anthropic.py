"""The fake Messages API speaks the wire format both clients expect."""

import json
import urllib.error
import urllib.request

import pytest

from tests.fakes.fake_anthropic import (FakeAnthropic, error, message, system_text, text,
                                        tool_results, tool_use)

# The fake API has nothing to do with the job store: one run is enough.
pytestmark = pytest.mark.sqlite_only



def _post(url, body, timeout=5):
    req = urllib.request.Request(url + "/v1/messages?beta=true", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json", "x-api-key": "dummy"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.headers.get("content-type"), resp.read().decode()


def _sse_events(raw):
    events = []
    for chunk in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


BODY = {"model": "claude-haiku-4-5", "max_tokens": 128000,
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_is_subagent=true;"},
                   {"type": "text", "text": "You are a worker"}],
        "messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "tolerated"}],
        "thinking": {"type": "adaptive"}, "context_management": {}, "output_config": {}}


def test_plain_json_reply_and_request_log():
    with FakeAnthropic() as api:
        api.enqueue(tool_use("Bash", {"command": "brain job list"}, id="toolu_1"))
        status, ctype, raw = _post(api.url, BODY)
        assert status == 200 and ctype == "application/json"
        msg = json.loads(raw)
        assert msg["type"] == "message" and msg["stop_reason"] == "tool_use"
        assert msg["content"] == [{"type": "tool_use", "id": "toolu_1", "name": "Bash",
                                   "input": {"command": "brain job list"}}]
        assert msg["model"] == "claude-haiku-4-5" and msg["usage"]["input_tokens"] > 0
        (rec,) = api.messages_requests()
        assert rec.client == "127.0.0.1" and rec.body["max_tokens"] == 128000
        assert "You are a worker" in system_text(rec.body) and rec.status == 200


def test_stream_reply_is_a_complete_sse_sequence():
    with FakeAnthropic() as api:
        api.enqueue(message([{"type": "text", "text": "launching"},
                             {"type": "tool_use", "name": "Agent", "input": {"prompt": "p", "description": "d"}}]))
        status, ctype, raw = _post(api.url, dict(BODY, stream=True))
        assert status == 200 and ctype == "text/event-stream"
        events = _sse_events(raw)
        names = [name for name, _ in events]
        assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
        assert names.count("content_block_start") == names.count("content_block_stop") == 2
        deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
        assert deltas[0] == {"type": "text_delta", "text": "launching"}
        assert json.loads(deltas[1]["partial_json"]) == {"prompt": "p", "description": "d"}
        assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_scripted_errors_then_responder_then_default():
    seen = []

    def responder(rec):
        seen.append(tool_results(rec.body))
        return text("from responder") if len(seen) == 1 else None

    with FakeAnthropic(responder=responder) as api:
        api.enqueue(error(429, msg="slow down"), error(500))
        for expected in (429, 500):
            with pytest.raises(urllib.error.HTTPError) as info:
                _post(api.url, BODY)
            assert info.value.code == expected
            payload = json.loads(info.value.read())
            assert payload["type"] == "error" and payload["error"]["type"] in ("rate_limit_error", "api_error")
            assert info.value.headers["retry-after"] == "0"
        body = dict(BODY, messages=[{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_9", "content": [{"type": "text", "text": "out"}]}]}])
        assert json.loads(_post(api.url, body)[2])["content"][0]["text"] == "from responder"
        assert json.loads(_post(api.url, BODY)[2])["content"][0]["text"] == "ok"
        assert seen[0] == {"toolu_9": "out"}
        assert [r.status for r in api.messages_requests()] == [429, 500, 200, 200]


def test_responder_exception_is_kept_and_answered_with_500():
    def responder(rec):
        raise RuntimeError("bad script")

    with FakeAnthropic(responder=responder) as api:
        with pytest.raises(urllib.error.HTTPError) as info:
            _post(api.url, BODY)
        assert info.value.code == 500
        assert len(api.errors) == 1 and "bad script" in str(api.errors[0])


def test_anthropic_sdk_round_trip_when_installed():
    anthropic = pytest.importorskip("anthropic", reason="the anthropic SDK is an optional extra")
    with FakeAnthropic() as api:
        api.enqueue(error(429), tool_use("lookup", {"q": "GET /health"}), text("200 OK"))
        client = anthropic.Anthropic(base_url=api.url, api_key="dummy", max_retries=2)
        first = client.messages.create(model="claude-haiku-4-5", max_tokens=100,
                                       messages=[{"role": "user", "content": "check"}])
        assert first.stop_reason == "tool_use" and first.content[0].input == {"q": "GET /health"}
        second = client.messages.create(
            model="claude-haiku-4-5", max_tokens=100,
            messages=[{"role": "user", "content": "check"},
                      {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                      {"role": "user", "content": [{"type": "tool_result", "tool_use_id": first.content[0].id,
                                                    "content": "up"}]}])
        assert second.content[0].text == "200 OK"
        assert [r.status for r in api.messages_requests()] == [429, 200, 200]
