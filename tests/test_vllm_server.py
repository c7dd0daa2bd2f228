"""vLLM's OpenAI-compatible server with augserve's scheduler: real HTTP requests with token-id
prompts and ``vllm_xargs`` hints (needs the vllm extra; starts a server on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e '.[vllm]')")

from augserve.vllm.server import server_command  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = "tiny"
START_TIMEOUT_S = 240
# ~25 ms a decode step on one CPU core: the long request holds the only sequence slot for ~5 s
# (with the 1-ms tiny model the API server, busy relaying its tokens, forwards the next
# requests only after it finished)
SERVER_MODEL = "data/models/llama_170m"
HOG_TOKENS = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(port: int, body: dict, timeout: float = 120.0) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def completion(prompt: list[int], max_tokens: int, **xargs) -> dict:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
            "seed": 0, "ignore_eos": True, "return_token_ids": True}
    if xargs:
        body["vllm_xargs"] = xargs
    return body


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    trace = tmp / "trace.jsonl"
    port = free_port()
    cmd = server_command(model=SERVER_MODEL, policy="augserve", predictor="hints", port=port,
                         max_model_len=1024,
                         max_num_seqs=1, max_num_batched_tokens=256, kv_cache_gib=0.0625,
                         trace=str(trace), extra=["--served-model-name", MODEL])
    env = dict(os.environ, OMP_NUM_THREADS="1", VLLM_CPU_OMP_THREADS_BIND="nobind")
    log = open(tmp / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail("server exited:\n" + (tmp / "server.log").read_text()[-4000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"server not up in {START_TIMEOUT_S} s:\n"
                                + (tmp / "server.log").read_text()[-4000:])
                time.sleep(1.0)
        yield port, trace
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the group this test started
                proc.wait(timeout=30)
        log.close()


def events(trace: Path, kind: str) -> list[dict]:
    lines = trace.read_text().splitlines() if trace.exists() else []
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def test_completion_with_token_ids(server) -> None:
    port, _ = server
    out = post(port, completion(list(range(10, 30)), 6))
    ch = out["choices"][0]
    assert ch["finish_reason"] == "length"
    assert len(ch["token_ids"]) == 6
    assert out["usage"] == {**out["usage"], "prompt_tokens": 20, "completion_tokens": 6}


def test_vllm_xargs_hints_reach_the_policy(server) -> None:
    port, trace = server
    out = post(port, completion(list(range(40, 72)), 4, aug_type="qa", tool="search",
                                tool_durations=[0.25], return_lengths=[4],
                                predicted_output_tokens=7))
    assert len(out["choices"][0]["token_ids"]) == 4
    seen = [e for e in events(trace, "enqueue") if e["aug_type"] == "qa"]
    assert seen, trace.read_text()[-2000:]
    e = seen[-1]
    assert e["current_tool"] == "search" and e["calls_done"] == 1
    assert e["observed_tool_s"] == [0.25] and e["prompt_tokens"] == 32
    assert e["metadata"]["predicted_output_tokens"] == 7


def test_admission_follows_the_hinted_order(server) -> None:
    """One sequence slot: a long request holds it while three others queue (sent in the order
    long, mid, short); the AugServe policy admits them shortest predicted output first."""
    port, trace = server
    n_admits = len(events(trace, "admit"))
    hints = {"q-long": 300, "q-mid": 40, "q-short": 5}
    with ThreadPoolExecutor(4) as ex:
        first = ex.submit(post, port, completion(list(range(100, 140)), HOG_TOKENS,
                                                 predicted_output_tokens=HOG_TOKENS, tag="hog"))
        time.sleep(0.2)
        futs = []
        for tag, pred in hints.items():
            futs.append(ex.submit(post, port, completion(list(range(200, 240)), 8,
                                                         predicted_output_tokens=pred, tag=tag)))
            time.sleep(0.05)
        assert len(first.result()["choices"][0]["token_ids"]) == HOG_TOKENS
        for f in futs:
            assert len(f.result()["choices"][0]["token_ids"]) == 8
    enq = {e["metadata"].get("tag"): e["t"] for e in events(trace, "enqueue")}
    tags = {e["request_id"]: e["metadata"].get("tag") for e in events(trace, "enqueue")}
    admits = events(trace, "admit")[n_admits:]
    order = [tags.get(e["request_id"]) for e in admits]
    assert order[0] == "hog"
    hog_done = admits[1]["t"]
    assert all(enq[t] < hog_done for t in hints), ("the queued requests reached the engine "
                                                   "after the long one finished", enq, hog_done)
    assert order[1:] == ["q-short", "q-mid", "q-long"], order
