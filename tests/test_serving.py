"""The FastAPI service under real uvicorn: concurrent clients, hostile requests on a raw socket, idle connections,
and `llm-course serve` as a user runs it (a subprocess stopped with SIGTERM)."""
import json, os, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path


from llm_course.serving import Limits, create_app, load_test, run_in_thread


def slow_len(texts):
    time.sleep(0.002)
    return [{"n": len(t)} for t in texts]


def raw(url, request: bytes, timeout=10) -> tuple[int, dict]:
    "Send bytes on a fresh socket; the status and JSON body of the reply."
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data:
                head, body = data.split(b"\r\n\r\n", 1)
                length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")]
                if length and len(body) >= length[0]: break
    head, body = data.split(b"\r\n\r\n", 1)
    try:
        return int(head.split()[1]), json.loads(body)
    except ValueError:
        return int(head.split()[1]), {"text": body.decode(errors="replace")}  # uvicorn's own 400 for bad HTTP


def test_200_concurrent_clients_all_answered(no_network):
    app = create_app(slow_len, name="len")
    with run_in_thread(app) as url:
        r = load_test(url + "/predict", [{"text": "x" * (i % 50 + 1)} for i in range(400)], clients=200)
    assert (r["requests"], r["failed"]) == (400, 0), r
    assert app.state.batcher.calls < 400          # concurrent requests were merged


def test_results_stay_with_their_request():
    app = create_app(lambda ts: [t[::-1] for t in ts], limits=Limits(max_wait_ms=20))
    import httpx, asyncio

    async def go(url):
        async with httpx.AsyncClient() as c:
            rs = await asyncio.gather(*[c.post(url, json={"texts": [f"a{i}", f"b{i}"]}) for i in range(40)])
        return [r.json()["predictions"] for r in rs]
    with run_in_thread(app) as url:
        out = asyncio.run(go(url + "/predict"))
    assert out == [[f"a{i}"[::-1], f"b{i}"[::-1]] for i in range(40)]


def test_hostile_requests_get_4xx_json(no_network):
    app = create_app(slow_len, limits=Limits(max_body_bytes=10_000))
    with run_in_thread(app) as url:
        post = lambda headers, body=b"": raw(url, b"POST /predict HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + body)
        status, _ = post(b"Content-Length: -1\r\n", b'{"text": "a"}')     # malformed HTTP: uvicorn answers 400 itself
        assert status == 400
        status, reply = post(b"Content-Length: 10000000\r\n", b"{")            # a claimed huge body: refused at once
        assert status == 413 and "limit" in reply["error"]
        chunk = b"x" * 4000
        body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"
        status, reply = post(b"Transfer-Encoding: chunked\r\n", body)            # no length: counted while reading
        assert status == 413, reply
        for bad in [b"[" * 100_000, b'{"text": ' + b"9" * 5000 + b"}", b'{"texts": []}', b'{"text": "a", "x": 1}']:
            req = urllib.request.Request(url + "/predict", data=bad, method="POST")
            try: urllib.request.urlopen(req); status = 200
            except urllib.error.HTTPError as e: status = e.code; assert "error" in json.loads(e.read())
            assert 400 <= status < 500, bad[:20]
        with urllib.request.urlopen(url + "/health") as r: assert json.loads(r.read())["status"] == "ok"


def test_idle_connections_are_closed_and_do_not_block():
    app = create_app(slow_len)
    with run_in_thread(app, timeout_keep_alive=1) as url:
        host, port = url.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port))) for _ in range(140)]
        # the server still answers while 140 connections sit idle
        req = urllib.request.Request(url + "/predict", data=b'{"text": "hi"}', method="POST")
        with urllib.request.urlopen(req, timeout=10) as r: assert json.loads(r.read()) == {"predictions": [{"n": 2}]}
        time.sleep(3)
        closed = 0
        for s in idle:
            s.settimeout(5)
            try: closed += s.recv(1) == b""
            except socket.timeout: pass
            except OSError: closed += 1
            s.close()
    assert closed == 140


def tiny_classifier(path: Path) -> Path:
    "A small saved classifier (our Encoder backbone, MiniLM's tokenizer): what `llm-course finetune` writes."
    from llm_course.assets import load_minilm_tokenizer
    from llm_course.heads import SequenceClassifier
    from llm_course.classifier import save_classifier
    from llm_course.transformer import Encoder, EncoderConfig
    tok = load_minilm_tokenizer()
    enc = Encoder(EncoderConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32))
    return save_classifier(SequenceClassifier(enc, 2, label_names=["neg", "pos"]), tok, path, max_length=32)


CLI = [sys.executable, "-c", "import sys; from llm_course.cli import main; sys.exit(main())"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def test_serve_command_end_to_end(tmp_path):
    model = tiny_classifier(tmp_path / "model")
    port = free_port()
    env = dict(os.environ, LLM_COURSE_PROFILE="ci")
    proc = subprocess.Popen(CLI + ["serve", str(model), "--port", str(port), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        url, t0 = f"http://127.0.0.1:{port}", time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r: health = json.loads(r.read()); break
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() - t0 < 120, "serve did not come up"
                time.sleep(0.5)
        assert health == {"status": "ok", "model": "model", "batching": True}
        req = urllib.request.Request(url + "/predict", data=json.dumps({"texts": ["good", "bad film"]}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r: preds = json.loads(r.read())["predictions"]
        assert [p["label"] in ("neg", "pos") and 0.5 <= p["score"] <= 1 for p in preds] == [True, True]
        with urllib.request.urlopen(url + "/openapi.json", timeout=5) as r:
            assert "/predict" in json.loads(r.read())["paths"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_serve_command_bad_model_dir_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for target in [tmp_path / "missing", tmp_path / "empty"]:
        r = subprocess.run(CLI + ["serve", str(target)], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode != 0
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert str(target) in r.stderr
