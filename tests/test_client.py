"""workflows/client.py against a fake ComfyUI server (stdlib http.server + a minimal websocket)."""
import base64
import hashlib
import json
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflows"))
import client  # noqa: E402

API = ROOT / "workflows" / "api" / "wan22_ti2v_5B_t2v.json"
VIDEO = b"\x00\x00\x00\x18ftypmp42fake-mp4-bytes"


def _frame(obj) -> bytes:
    data = json.dumps(obj).encode()
    head = bytes([0x81]) + (bytes([len(data)]) if len(data) < 126 else bytes([126]) + struct.pack(">H", len(data)))
    return head + data


class FakeComfy(BaseHTTPRequestHandler):
    queued = None  # set per server

    def log_message(self, *args):
        pass

    def _json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        graph = body["prompt"]
        if graph["6"]["inputs"]["steps"] > 100:
            self.server.queued.set()  # nothing will run: release the websocket
            return self._json(400, {"error": {"type": "prompt_outputs_failed_validation",
                                              "message": "Prompt outputs failed validation", "details": ""},
                                    "node_errors": {"6": {"class_type": "WanT2VSampler", "errors": [
                                        {"type": "value_bigger_than_max", "message": "Value bigger than max",
                                         "details": "steps: 500 > 100"}]}}})
        self.server.graph = graph
        self.server.queued.set()
        return self._json(200, {"prompt_id": "p1", "number": 0, "node_errors": {}})

    def do_GET(self):
        if self.path.startswith("/ws"):
            key = self.headers["Sec-WebSocket-Key"]
            accept = base64.b64encode(hashlib.sha1((key + client.WS_GUID).encode()).digest()).decode()
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.end_headers()
            self.wfile.write(_frame({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}}))
            self.server.queued.wait(5)
            if self.server.graph is None:
                return None  # the prompt was rejected; the client has gone
            self.wfile.write(bytes([0x89, 0]))  # a ping the client must answer
            self.wfile.write(bytes([0x82, 3]) + b"abc")  # a binary preview frame
            for i in (1, 2):
                self.wfile.write(_frame({"type": "progress", "data": {"value": i, "max": 2, "prompt_id": "p1",
                                                                       "node": "6"}}))
            if self.server.graph["6"]["inputs"]["seed"] == 666:
                self.wfile.write(_frame({"type": "execution_error", "data": {
                    "prompt_id": "p1", "node_id": "7", "node_type": "WanT2VDecode", "exception_type": "ValueError",
                    "exception_message": "boom"}}))
            self.wfile.write(_frame({"type": "executing", "data": {"node": None, "prompt_id": "p1"}}))
            self.wfile.flush()
            self.rfile.read(2)  # the pong header, proving the client answered
            return None
        if self.path.startswith("/history/p1"):
            return self._json(200, {"p1": {"status": {"status_str": "success", "completed": True, "messages": []},
                                           "outputs": {"8": {"images": [{"filename": "clip_00001_.mp4",
                                                                         "subfolder": "WanT2V", "type": "output"}],
                                                             "animated": [True]}}}})
        if self.path.startswith("/view?"):
            assert "filename=clip_00001_.mp4" in self.path and "subfolder=WanT2V" in self.path
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(VIDEO)))
            self.end_headers()
            self.wfile.write(VIDEO)
            return None
        return self._json(404, {})


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeComfy)
    httpd.queued, httpd.graph = threading.Event(), None
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_success_with_overrides_progress_and_download(server, tmp_path, capsys):
    httpd, url = server
    code = client.main([str(API), "--server", url, "--set", "Prompt.prompt=a red fox", "--set", "seed=7",
                        "--set", "6.steps=2", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert (tmp_path / "clip_00001_.mp4").read_bytes() == VIDEO
    assert "step 2/2" in out and str(tmp_path / "clip_00001_.mp4") in out
    assert httpd.graph["4"]["inputs"]["prompt"] == "a red fox"
    assert httpd.graph["6"]["inputs"]["seed"] == 7 and httpd.graph["6"]["inputs"]["steps"] == 2


def test_validation_error_exits_nonzero_with_server_message(server, tmp_path, capsys):
    _, url = server
    code = client.main([str(API), "--server", url, "--set", "steps=500", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "Prompt outputs failed validation" in err and "steps: 500 > 100" in err and "WanT2VSampler" in err


def test_execution_error_exits_nonzero(server, tmp_path, capsys):
    _, url = server
    code = client.main([str(API), "--server", url, "--set", "seed=666", "--out", str(tmp_path)])
    assert code == 1 and "WanT2VDecode" in capsys.readouterr().err


def test_polling_without_websocket(server, tmp_path):
    _, url = server
    assert client.main([str(API), "--server", url, "--no-ws", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "clip_00001_.mp4").exists()


def test_override_errors_are_explicit():
    graph = client.load_workflow(API)
    with pytest.raises(ValueError, match="titles"):
        client.apply_overrides(graph, ["Nope.steps=3"])
    with pytest.raises(ValueError, match="qualify"):
        client.apply_overrides(graph, ["fps=30"])  # both latent init and save video have fps
    with pytest.raises(ValueError, match="link"):
        client.apply_overrides(graph, ["Sampler.model=3"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        client.apply_overrides(graph, ["seed"])
    assert client.apply_overrides(graph, ["Save Video.fps=30"])["8"]["inputs"]["fps"] == 30.0
    assert graph["8"]["inputs"]["fps"] == 24.0  # the input graph is not mutated


def test_ui_format_is_refused(tmp_path, capsys):
    ui = ROOT / "workflows" / "wan22_ti2v_5B_t2v.json"
    assert client.main([str(ui), "--server", "http://127.0.0.1:9"]) == 2
    assert "UI-format" in capsys.readouterr().err
