"""Run an API-format ComfyUI workflow from the command line (standard library only).

    python workflows/client.py workflows/api/wan22_ti2v_5B_t2v.json --server http://127.0.0.1:8188 \
        --set "Prompt.prompt=a red fox running through snow" --set seed=7 --set Sampler.steps=30 --out results/

`--set KEY=VALUE`: KEY is `<node title or id>.<input>` or a bare input name that exactly one node has; VALUE keeps
the type of the value it replaces (numbers, booleans, JSON for lists). `--image start.png` (image-to-video
workflows) uploads the file through POST /upload/image and points the graph's LoadImage node at it. The workflow is queued with POST /prompt,
progress is read from the /ws websocket (falls back to polling /history), outputs are downloaded via /view.
Exit status: 0 on success, 1 when the server rejects or fails the workflow (its message is printed), 2 for usage errors.

Many jobs over several servers (one ComfyUI per GPU): `--jobs jobs.jsonl` with one JSON object per line, `output` (the
file name) plus `--set` keys, e.g. {"output": "fox.mp4", "Prompt.prompt": "a red fox", "seed": 7} (optional "image":
a start image, relative to the jobs file), and `--server` repeated. Each server takes the next job when it is free.
Files are written atomically with a line in OUT/manifest.jsonl (job, file, sha256, seconds, worker = the server); a
re-run skips jobs whose files exist and match. Exit status 1 when a job failed (the others still run), 130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import queue
import socket
import struct
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 handshake constant


class WorkflowError(Exception):
    """The server rejected or failed the workflow; the message is the server's."""


# workflow editing ----------------------------------------------------------------------------------------------------
def load_workflow(path: str | os.PathLike) -> dict:
    graph = json.loads(Path(path).read_text(encoding="utf-8"))
    if "nodes" in graph and "links" in graph:
        raise ValueError(f"{path} is a UI-format workflow; the API needs the API format (in ComfyUI: Workflow -> "
                         "Export (API)), e.g. workflows/api/*.json")
    if not graph or not all(isinstance(n, dict) and "class_type" in n for n in graph.values()):
        raise ValueError(f"{path} is not an API-format workflow ({{id: {{class_type, inputs}}}})")
    return graph


def _coerce(old, text: str):
    if isinstance(old, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"expected true/false, got {text!r}")
        return text.lower() in ("true", "1")
    if isinstance(old, int):
        return int(text)
    if isinstance(old, float):
        return float(text)
    if isinstance(old, str):
        return text
    return json.loads(text)


def apply_overrides(graph: dict, assignments: list[str]) -> dict:
    """A copy of `graph` with `KEY=VALUE` assignments applied (see the module docstring); errors name the fix."""
    graph = json.loads(json.dumps(graph))
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. seed=7 or \"Prompt.prompt=a cat\"")
        node_ref, dot, name = key.rpartition(".")
        if dot:
            ids = [i for i, n in graph.items() if i == node_ref or n.get("_meta", {}).get("title") == node_ref]
            if len(ids) != 1:
                titles = sorted(n.get("_meta", {}).get("title", i) for i, n in graph.items())
                raise ValueError(f"--set {key}: {'no' if not ids else 'more than one'} node with id or title "
                                 f"{node_ref!r}; titles: {titles}")
            if name not in graph[ids[0]]["inputs"]:
                raise ValueError(f"--set {key}: node {node_ref!r} has no input {name!r}; inputs: "
                                 f"{sorted(graph[ids[0]]['inputs'])}")
        else:
            ids = [i for i, n in graph.items() if name in n["inputs"] and not isinstance(n["inputs"][name], list)]
            if len(ids) != 1:
                raise ValueError(f"--set {key}: {'no' if not ids else 'more than one'} node has an input {name!r}; "
                                 "qualify it as <node title or id>.<input>")
        old = graph[ids[0]]["inputs"][name]
        if isinstance(old, list):
            raise ValueError(f"--set {key}: that input is a link from another node, not a value")
        try:
            graph[ids[0]]["inputs"][name] = _coerce(old, text)
        except ValueError as e:
            raise ValueError(f"--set {key}: {e}") from None
    return graph


def set_image(graph: dict, name: str) -> dict:
    """A copy of `graph` whose one LoadImage node reads `name` (a file in the server's input folder)."""
    ids = [i for i, n in graph.items() if n["class_type"] == "LoadImage"]
    if len(ids) != 1:
        raise ValueError(f"--image: the workflow has {len(ids)} LoadImage nodes, --image needs exactly one; "
                         "use an image-to-video workflow (e.g. workflows/api/wan22_tiny_demo_i2v.json) or "
                         "--set <title>.image=NAME for a file already on the server")
    graph = json.loads(json.dumps(graph))
    graph[ids[0]]["inputs"]["image"] = name
    return graph


def upload_image(server: str, path: str | os.PathLike, timeout: float = 60.0) -> str:
    """POST the file to /upload/image (multipart form, the server's input folder, overwriting a file of the same
    name); returns the name LoadImage takes ("subfolder/name" when the server files it in a subfolder)."""
    path = Path(path)
    boundary = uuid.uuid4().hex
    parts = [(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n').encode()
             for k, v in (("type", "input"), ("overwrite", "true"))]
    parts.append((f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
                   "Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(server.rstrip("/") + "/upload/image", data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        raise WorkflowError(f"upload of {path.name} refused ({e.code}): {e.read().decode(errors='replace')}") from None
    return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]


# HTTP ----------------------------------------------------------------------------------------------------------------
def _request(server: str, path: str, body: dict | None = None, timeout: float = 30.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.rstrip("/") + path, data=data,
                                 headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
        return json.loads(raw) if resp.headers.get_content_type() == "application/json" else raw


def format_prompt_error(payload: dict) -> str:
    """One readable message from a /prompt 400 answer (error + per-node errors)."""
    err = payload.get("error", {})
    lines = [f"{err.get('message', 'rejected')}: {err.get('details', '')}".rstrip(": ")]
    for node_id, info in (payload.get("node_errors") or {}).items():
        for e in info.get("errors", []):
            lines.append(f"  node {node_id} ({info.get('class_type', '?')}): {e.get('message', '')}: "
                         f"{e.get('details', '')}")
    return "\n".join(lines)


def queue_prompt(server: str, graph: dict, client_id: str, extra_data: dict | None = None) -> str:
    try:
        answer = _request(server, "/prompt", {"prompt": graph, "client_id": client_id, **(
            {"extra_data": extra_data} if extra_data else {})})
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            message = format_prompt_error(json.loads(body))
        except ValueError:
            message = body.decode(errors="replace")
        raise WorkflowError(message) from None
    return answer["prompt_id"]


# websocket (RFC 6455, text frames, client side) ------------------------------------------------------------------------
class WebSocket:
    def __init__(self, server: str, path: str, timeout: float):
        url = urllib.parse.urlsplit(server)
        if url.scheme != "http":
            raise ConnectionError(f"only http:// servers support the websocket here (got {server})")
        self.sock = socket.create_connection((url.hostname, url.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {url.hostname}:{url.port or 80}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        status = head.split(b"\r\n")[0].decode(errors="replace")
        if " 101 " not in status or accept.encode() not in head:
            raise ConnectionError(f"websocket handshake refused: {status}")

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("websocket closed by the server")
            buf += chunk
        return buf

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        header = bytes([0x80 | opcode]) + (bytes([0x80 | len(payload)]) if len(payload) < 126 else
                                           bytes([0x80 | 126]) + struct.pack(">H", len(payload)))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self) -> tuple[int, bytes]:
        """Next complete message as (opcode, payload): 1 text, 2 binary; answers pings, raises on close."""
        message, first = b"", None
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            n = struct.unpack(">H", self._exact(2))[0] if n == 126 else struct.unpack(">Q", self._exact(8))[0] \
                if n == 127 else n
            mask = self._exact(4) if b1 & 0x80 else None
            payload = self._exact(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the server")
            if opcode == 0x9:
                self._send(0xA, payload)
                continue
            if opcode in (0x1, 0x2):
                first = opcode
            message += payload
            if b0 & 0x80 and first is not None:
                return first, message

    def close(self) -> None:
        self.sock.close()


def wait_websocket(ws: WebSocket, prompt_id: str, log=print) -> None:
    """Print progress until the prompt finishes; WorkflowError on execution_error / execution_interrupted."""
    while True:
        opcode, payload = ws.recv()
        if opcode != 1:
            continue  # binary frames are latent previews
        msg = json.loads(payload)
        kind, data = msg.get("type"), msg.get("data", {})
        if data.get("prompt_id") not in (None, prompt_id):
            continue
        if kind == "progress":
            log(f"node {data.get('node')}: step {data['value']}/{data['max']}")
        elif kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
            return
        elif kind == "execution_error":
            raise WorkflowError(f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                                f"{data.get('exception_type')}: {data.get('exception_message')}")
        elif kind == "execution_interrupted":
            raise WorkflowError(f"interrupted at node {data.get('node_id')} ({data.get('node_type')})")


def wait_history(server: str, prompt_id: str, timeout: float, poll: float = 1.0) -> dict:
    """Poll /history until the prompt has a status (used when the websocket is unavailable)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = _request(server, f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            return entry
        time.sleep(poll)
    raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:g} s")


def fetch_outputs(server: str, entry: dict) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every file the prompt's output nodes report (images, videos, gifs...), via /view."""
    status = entry.get("status", {})
    if status.get("status_str") == "error":
        errors = [d for ev, d in status.get("messages", []) if ev == "execution_error"]
        raise WorkflowError(errors[0].get("exception_message", "execution failed") if errors else "execution failed")
    files = []
    for output in entry.get("outputs", {}).values():
        for items in output.values():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and "filename" in item:
                    query = urllib.parse.urlencode({k: item.get(k, "") for k in ("filename", "subfolder", "type")})
                    files.append((Path(item["filename"]).name, _request(server, f"/view?{query}", timeout=300)))
    return files


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes) -> None:
    """Temporary file beside `path`, then rename: the file is complete or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def download_outputs(server: str, entry: dict, out_dir: Path) -> list[Path]:
    """Fetch every file the prompt's output nodes report into out_dir (each written atomically)."""
    saved = []
    for name, data in fetch_outputs(server, entry):
        write_atomic(out_dir / name, data)
        saved.append(out_dir / name)
    return saved


def run(server: str, graph: dict, out_dir: Path, *, timeout: float = 3600.0, use_ws: bool = True,
        log=print, extra_data: dict | None = None) -> list[Path]:
    """Queue `graph`, follow its progress, download its outputs; returns the saved files.

    extra_data: e.g. {"extra_pnginfo": {"workflow": <UI-format graph>}} so saved files embed the UI workflow."""
    return download_outputs(server, execute(server, graph, timeout=timeout, use_ws=use_ws, log=log,
                                            extra_data=extra_data), out_dir)


def execute(server: str, graph: dict, *, timeout: float = 3600.0, use_ws: bool = True, log=print,
            extra_data: dict | None = None) -> dict:
    """Queue `graph` and wait for it; returns its /history entry."""
    client_id = uuid.uuid4().hex
    ws = None
    if use_ws:
        try:
            ws = WebSocket(server, f"/ws?clientId={client_id}", timeout)
        except OSError as e:
            log(f"websocket unavailable ({e}); polling /history instead")
    try:
        prompt_id = queue_prompt(server, graph, client_id, extra_data)
        log(f"queued prompt {prompt_id}")
        if ws is not None:
            wait_websocket(ws, prompt_id, log)
        return wait_history(server, prompt_id, timeout)
    finally:
        if ws is not None:
            ws.close()


# many jobs over several servers ---------------------------------------------------------------------------------------
MANIFEST = "manifest.jsonl"


def parse_jobs(path: str | os.PathLike, graph: dict) -> tuple[list[dict], list[str]]:
    """A jobs file -> (jobs {line, output, image, graph, key}, errors "line N: ..."); bad lines do not stop the rest.

    A line is a JSON object: `output` (file name in --out), optional `image`, every other key a --set KEY=VALUE."""
    path = Path(path)
    jobs, errors, seen = [], [], {}
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
            if not isinstance(obj, dict) or not isinstance(obj.get("output"), str):
                raise ValueError('expected a JSON object with an "output" file name, e.g. {"output": "fox.mp4", '
                                 '"Prompt.prompt": "a red fox", "seed": 7}')
            out = Path(obj["output"])
            if out.is_absolute() or ".." in out.parts or not out.name:
                raise ValueError(f"output {obj['output']!r} must be a relative file name inside --out (no '..')")
            if out.as_posix() in seen:
                raise ValueError(f"output {obj['output']!r} is already the output of line {seen[out.as_posix()]}")
            sets = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in obj.items()
                    if k not in ("output", "image")]
            job_graph, image, digest = apply_overrides(graph, sets), None, ""
            if obj.get("image") is not None:
                image = Path(obj["image"]) if Path(obj["image"]).is_absolute() else path.parent / obj["image"]
                if not image.is_file():
                    raise ValueError(f"image {obj['image']!r} not found (looked for {image}); paths are relative to "
                                     "the jobs file")
                set_image(job_graph, image.name)  # the workflow must have one LoadImage node
                digest = hashlib.sha256(image.read_bytes()).hexdigest()
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            errors.append(f"line {number}: {e}")
            continue
        seen[out.as_posix()] = number
        key = hashlib.sha256(json.dumps({"graph": job_graph, "image": digest}, sort_keys=True).encode()).hexdigest()
        jobs.append({"line": number, "output": out.as_posix(), "image": image, "graph": job_graph, "key": key})
    return jobs, errors


class Manifest:
    """OUT/manifest.jsonl: one complete line per finished job, appended after its files were renamed into place."""

    def __init__(self, out_dir: Path):
        self.out_dir, self.path, self.entries = Path(out_dir), Path(out_dir) / MANIFEST, {}
        if self.path.is_file():
            for text in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(text)
                except ValueError:
                    continue  # an interrupted line
                if isinstance(entry, dict) and "sha256" in entry:
                    self.entries[entry["job"]] = entry

    def is_done(self, job: dict) -> bool:
        entry = self.entries.get(job["output"])
        if entry is None or entry.get("key") != job["key"]:
            return False
        files = [entry] + entry.get("more", [])
        return all((self.out_dir / f["file"]).is_file() and hashlib.sha256((self.out_dir / f["file"]).read_bytes())
                   .hexdigest() == f["sha256"] for f in files)

    def record(self, job: dict, files: list[tuple[str, bytes]], seconds: float, worker: str) -> dict:
        stem, suffix = os.path.splitext(job["output"])
        written = []
        for i, (name, data) in enumerate(files):  # fox.mp4; a second output file: fox_2.<its extension>
            rel = job["output"] if i == 0 else f"{stem}_{i + 1}{Path(name).suffix or suffix}"
            write_atomic(self.out_dir / rel, data)
            written.append({"file": rel, "sha256": hashlib.sha256(data).hexdigest()})
        entry = {"job": job["output"], **written[0], "seconds": round(seconds, 3), "worker": worker, "key": job["key"]}
        if len(written) > 1:
            entry["more"] = written[1:]
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.entries[job["output"]] = entry
        return entry


def run_batch(servers: list[str], jobs: list[dict], out_dir: Path, *, timeout: float = 3600.0, use_ws: bool = True,
              retries: int = 2, extra_data: dict | None = None, log=print) -> dict:
    """Spread the jobs not yet done over the servers (one thread each, taking the next job when free).

    A server the client cannot reach is dropped and its job goes to another (at most `retries` times); a job the
    server rejects or fails is reported failed. Returns {"rendered", "skipped", "failed": [(job, error)],
    "interrupted"}; Ctrl-C stops after the file being written (prompts already queued keep running there)."""
    manifest = Manifest(out_dir)
    todo = [j for j in jobs if not manifest.is_done(j)]
    result = {"rendered": [], "skipped": [j["output"] for j in jobs if j not in todo], "failed": [],
              "interrupted": False}
    work, lock, stop = queue.Queue(), threading.Lock(), threading.Event()
    for job in todo:
        work.put(job)
    state = {"pending": len(todo), "attempts": {}}
    total = len(jobs)

    def finish(job, error=None):
        with lock:
            state["pending"] -= 1
            if error is None:
                result["rendered"].append(job["output"])
            else:
                result["failed"].append((job["output"], error))
            n = len(result["rendered"]) + len(result["skipped"]) + len(result["failed"])
        log(f"[{n}/{total}] " + (f"failed {job['output']} (line {job['line']}): {error}" if error else
                                 f"wrote {out_dir / job['output']}"))

    def worker(server: str):
        while not stop.is_set() and state["pending"] > 0:
            try:
                job = work.get(timeout=0.2)
            except queue.Empty:
                continue
            tries = state["attempts"][job["output"]] = state["attempts"].get(job["output"], 0) + 1
            start = time.monotonic()
            try:
                graph = job["graph"]
                if job["image"] is not None:
                    graph = set_image(graph, upload_image(server, job["image"]))
                files = fetch_outputs(server, execute(server, graph, timeout=timeout, use_ws=use_ws,
                                                      log=lambda message: None, extra_data=extra_data))
                if not files:
                    raise WorkflowError("the workflow saved no files; it needs an output node (e.g. Save Video)")
            except (WorkflowError, TimeoutError) as e:  # the server ran the job and it failed: not retried
                finish(job, f"{server}: {e}")
            except OSError as e:  # the server is unreachable: drop it, another one takes the job
                if tries <= retries:
                    log(f"{server} unreachable ({e}); {job['output']} goes to another server")
                    work.put(job)
                else:
                    finish(job, f"{server} unreachable after {tries} attempts: {e}")
                return
            else:
                with lock:
                    if stop.is_set():
                        return  # Ctrl-C: nothing more is written
                    manifest.record(job, files, time.monotonic() - start, server)
                finish(job)

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            time.sleep(0.1)
    except KeyboardInterrupt:
        with lock:  # waits for a file being written, then nothing more is
            stop.set()
        result["interrupted"] = True
        return result
    while not work.empty():
        finish(work.get(), "no server left: every --server was unreachable")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", help="API-format workflow JSON")
    parser.add_argument("--server", action="append", default=None,
                        help="ComfyUI URL (default http://127.0.0.1:8188); repeat with --jobs to spread the jobs")
    parser.add_argument("--jobs", metavar="JSONL", help="one job per line (see above); outputs go to --out")
    parser.add_argument("--retries", type=int, default=2, help="--jobs: times a job moves on when its server is "
                                                               "unreachable (default 2)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default="outputs", help="folder for the downloaded outputs")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the result")
    parser.add_argument("--no-ws", action="store_true", help="poll /history instead of using the websocket")
    parser.add_argument("--embed-ui", metavar="UI_JSON", help="UI-format workflow to embed in saved files (so "
                                                              "dropping the output into ComfyUI reloads the graph)")
    parser.add_argument("--image", metavar="PNG", help="start image for an image-to-video workflow: uploaded to the "
                                                       "server's input folder and set on the LoadImage node")
    args = parser.parse_args(argv)
    servers = args.server or ["http://127.0.0.1:8188"]
    try:
        if len(servers) > 1 and not args.jobs:
            raise ValueError(f"{len(servers)} --server URLs need --jobs (one workflow runs on one server)")
        if args.jobs and args.image:
            raise ValueError("--image with --jobs: give each job its start image as \"image\" in the jobs file")
        graph = apply_overrides(load_workflow(args.workflow), args.sets)
        extra = {"extra_pnginfo": {"workflow": json.loads(Path(args.embed_ui).read_text(encoding="utf-8"))}} \
            if args.embed_ui else None
        if args.image:
            if not Path(args.image).is_file():
                raise ValueError(f"--image {args.image}: file not found; give the path of a PNG/JPEG file")
            graph = set_image(graph, Path(args.image).name)  # checks the graph before anything is uploaded
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.jobs:
        return _main_batch(args, servers, graph, extra)
    try:
        if args.image:
            graph = set_image(graph, upload_image(servers[0], args.image))
        files = run(servers[0], graph, Path(args.out), timeout=args.timeout, use_ws=not args.no_ws,
                    extra_data=extra)
    except (WorkflowError, TimeoutError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in files:
        print(path)
    return 0


def _main_batch(args, servers: list[str], graph: dict, extra: dict | None) -> int:
    try:
        jobs, errors = parse_jobs(args.jobs, graph)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for e in errors:
        print(f"error: {args.jobs} {e}", file=sys.stderr)
    r = run_batch(servers, jobs, Path(args.out), timeout=args.timeout, use_ws=not args.no_ws, retries=args.retries,
                  extra_data=extra)
    for job, error in r["failed"]:
        print(f"error: job {job}: {error}", file=sys.stderr)
    print(f"{len(r['rendered'])} rendered, {len(r['skipped'])} skipped (already done), {len(r['failed'])} failed, "
          f"{len(errors)} bad line(s); manifest: {Path(args.out) / MANIFEST}" + (" (interrupted)" if r["interrupted"]
                                                                                  else ""))
    return 130 if r["interrupted"] else 1 if r["failed"] or errors else 0


if __name__ == "__main__":
    sys.exit(main())
