"""workflows/client.py --jobs over several --server URLs, against stdlib fake ComfyUI servers (polling /history):
jobs spread over the servers, atomic files + manifest, skip-on-rerun, bad lines, failed jobs, an unreachable server."""
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflows"))
import client  # noqa: E402

API = ROOT / "workflows" / "api" / "wan22_ti2v_5B_t2v.json"


def _video(graph) -> bytes:
    return f"mp4:{graph['4']['inputs']['prompt']}:{graph['6']['inputs']['seed']}".encode()


class Fake(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, code, body: bytes, kind="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            pid = f"p{len(self.server.graphs)}"
            self.server.graphs[pid] = body["prompt"]
        self._send(200, json.dumps({"prompt_id": pid, "number": 0, "node_errors": {}}).encode())

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path.startswith("/history/"):
            time.sleep(0.05)  # "rendering": lets the other server take the next job
            pid = url.path.rsplit("/", 1)[1]
            graph = self.server.graphs[pid]
            if graph["6"]["inputs"]["seed"] == 666:
                status = {"status_str": "error", "completed": False,
                          "messages": [["execution_error", {"exception_message": "boom in the sampler"}]]}
                return self._send(200, json.dumps({pid: {"status": status, "outputs": {}}}).encode())
            out = {"8": {"images": [{"filename": f"{pid}.mp4", "subfolder": "", "type": "output"}]}}
            return self._send(200, json.dumps({pid: {"status": {"status_str": "success", "completed": True,
                                                                "messages": []}, "outputs": out}}).encode())
        if url.path == "/view":
            pid = parse_qs(url.query)["filename"][0][:-4]
            return self._send(200, _video(self.server.graphs[pid]), "video/mp4")
        return self._send(404, b"{}")


@pytest.fixture
def servers():
    made = []
    for _ in range(2):
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Fake)
        httpd.graphs, httpd.lock = {}, threading.Lock()
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        made.append((httpd, f"http://127.0.0.1:{httpd.server_address[1]}"))
    yield made
    for httpd, _ in made:
        httpd.shutdown()
        httpd.server_close()


def _jobs(tmp_path, lines):
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def _args(path, urls, out):
    return [str(API), "--jobs", str(path), "--no-ws", "--out", str(out), *[a for u in urls for a in ("--server", u)]]


def test_jobs_spread_over_servers_and_rerun_skips(servers, tmp_path, capsys):
    lines = [{"output": f"clip{i}.mp4", "Prompt.prompt": f"prompt {i}", "seed": i} for i in range(4)]
    path, out = _jobs(tmp_path, lines), tmp_path / "out"
    urls = [u for _, u in servers]
    assert client.main(_args(path, urls, out)) == 0
    for i in range(4):
        assert (out / f"clip{i}.mp4").read_bytes() == f"mp4:prompt {i}:{i}".encode()
    entries = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(e["job"] for e in entries) == [f"clip{i}.mp4" for i in range(4)]
    assert {e["worker"] for e in entries} == set(urls)  # both servers worked
    assert all(set(e) >= {"job", "file", "sha256", "seconds", "worker"} for e in entries)
    queued = sum(len(h.graphs) for h, _ in servers)
    capsys.readouterr()
    assert client.main(_args(path, urls, out)) == 0
    assert "0 rendered, 4 skipped" in capsys.readouterr().out and sum(len(h.graphs) for h, _ in servers) == queued
    lines[2]["seed"] = 20  # an edited job and a file changed on disk render again
    (out / "clip0.mp4").write_bytes(b"tampered")
    assert client.main(_args(_jobs(tmp_path, lines), urls, out)) == 0
    assert "2 rendered, 2 skipped" in capsys.readouterr().out
    assert (out / "clip2.mp4").read_bytes() == b"mp4:prompt 2:20" and (out / "clip0.mp4").read_bytes() == b"mp4:prompt 0:0"
    assert not list(out.glob("*.part")) and not list(out.glob(".*"))


def test_bad_lines_and_failed_jobs_do_not_stop_the_rest(servers, tmp_path, capsys):
    path = _jobs(tmp_path, [{"output": "a.mp4", "seed": 1}, '{"output": "b.mp4", ', {"output": "c.mp4", "nope": 3},
                            {"output": "d.mp4", "seed": 666}, {"output": "a.mp4", "seed": 2},
                            {"output": "e.mp4", "seed": 5}])
    code = client.main(_args(path, [u for _, u in servers], tmp_path / "out"))
    captured = capsys.readouterr()
    assert code == 1
    assert "line 2:" in captured.err and "line 3: --set nope" in captured.err and "line 5:" in captured.err
    assert "job d.mp4" in captured.err and "boom in the sampler" in captured.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.mp4", "e.mp4", "manifest.jsonl"]


def test_unreachable_server_hands_its_jobs_to_the_others(servers, tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    path = _jobs(tmp_path, [{"output": f"v{i}.mp4", "seed": i} for i in range(3)])
    assert client.main(_args(path, [dead, servers[0][1]], tmp_path / "out")) == 0
    assert all((tmp_path / "out" / f"v{i}.mp4").is_file() for i in range(3))
    assert "unreachable" in capsys.readouterr().out
    assert client.main(_args(path, [dead], tmp_path / "out2")) == 1  # no server left: reported, not hung


def test_several_servers_need_jobs(capsys):
    assert client.main([str(API), "--server", "http://a", "--server", "http://b"]) == 2
    assert "need --jobs" in capsys.readouterr().err
