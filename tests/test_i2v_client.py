"""workflows/client.py --image: the multipart upload to /upload/image (against a stdlib fake server) and the
LoadImage edit; the real server round trip is tests/test_comfy_contract.py::test_i2v_workflow_through_client_..."""
import email.parser
import email.policy
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflows"))
import client  # noqa: E402

API_I2V = ROOT / "workflows" / "api" / "wan22_tiny_demo_i2v.json"
API_T2V = ROOT / "workflows" / "api" / "wan22_tiny_demo_t2v.json"


class FakeUpload(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
        fields = {part.get_param("name", header="content-disposition"): part for part in msg.iter_parts()}
        self.server.received = {"path": self.path, "type": fields["type"].get_content(),
                                "overwrite": fields["overwrite"].get_content(),
                                "filename": fields["image"].get_filename(), "data": fields["image"].get_content()}
        answer = json.dumps({"name": fields["image"].get_filename(), "subfolder": self.server.subfolder,
                             "type": "input"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeUpload)
    httpd.subfolder = ""
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


def test_upload_sends_the_file_as_comfyui_expects(server, tmp_path):
    png = tmp_path / "start.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    url = f"http://127.0.0.1:{server.server_address[1]}"
    assert client.upload_image(url, png) == "start.png"
    got = server.received
    assert got == {"path": "/upload/image", "type": "input", "overwrite": "true", "filename": "start.png",
                   "data": b"\x89PNG\r\n\x1a\nfake"}
    server.subfolder = "clips"
    assert client.upload_image(url, png) == "clips/start.png"


def test_set_image_edits_the_one_load_image_node():
    graph = client.load_workflow(API_I2V)
    edited = client.set_image(graph, "mine.png")
    (node_id,) = [i for i, n in edited.items() if n["class_type"] == "LoadImage"]
    assert edited[node_id]["inputs"]["image"] == "mine.png"
    assert graph[node_id]["inputs"]["image"] == "wan22_tiny_demo_start.png"  # the input graph is not mutated
    with pytest.raises(ValueError, match="0 LoadImage nodes"):
        client.set_image(client.load_workflow(API_T2V), "mine.png")


def test_main_refuses_a_missing_image_before_contacting_the_server(tmp_path, capsys):
    code = client.main([str(API_I2V), "--server", "http://127.0.0.1:9", "--image", str(tmp_path / "nope.png")])
    assert code == 2 and "nope.png: file not found" in capsys.readouterr().err
    (tmp_path / "a.png").write_bytes(b"x")
    code = client.main([str(API_T2V), "--server", "http://127.0.0.1:9", "--image", str(tmp_path / "a.png")])
    assert code == 2 and "0 LoadImage nodes" in capsys.readouterr().err
