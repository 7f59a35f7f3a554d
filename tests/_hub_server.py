"""A local stand-in for the Hugging Face Hub's HTTP API, enough for ``huggingface_hub`` to create a
repository and commit files to it: ``/api/repos/create``, ``/api/validate-yaml``,
``/api/models/<repo>/preupload/<rev>`` (every file "regular", so contents travel inside the commit)
and ``/api/models/<repo>/commit/<rev>``. It records every request and commit; nothing leaves the
machine. Tokens map to user names; any other token is refused with 401."""

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Commit:
    repo_id: str
    revision: str
    message: str
    files: dict  # path in repo -> bytes


@dataclass
class HubState:
    tokens: dict  # token -> user name
    commit_delay: float = 0.0  # seconds each commit takes (to test pushes skipped while one runs)
    repos: dict = field(default_factory=dict)  # repo id -> {"private": bool}
    commits: list = field(default_factory=list)
    requests: list = field(default_factory=list)  # (method, path, headers with lower-case names)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def files(self, repo_id: str) -> dict:
        """The repository's files after every commit, path -> bytes."""
        merged = {}
        for commit in self.commits:
            if commit.repo_id == repo_id:
                merged.update(commit.files)
        return merged


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def _reply(self, status: int, payload) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _user(self):
        header = self.headers.get("Authorization", "")
        return self.server.hub.tokens.get(header.removeprefix("Bearer ").strip())

    def do_GET(self):
        self.server.hub.requests.append(("GET", self.path, {k.lower(): v for k, v in self.headers.items()}))
        if self.path.startswith("/api/whoami-v2") and self._user():
            self._reply(200, {"name": self._user(), "type": "user"})
            return
        self._reply(404, {"error": f"not implemented here: GET {self.path}"})

    def do_POST(self):
        hub = self.server.hub
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        hub.requests.append(("POST", self.path, {k.lower(): v for k, v in self.headers.items()}))
        user = self._user()
        if user is None:
            self._reply(401, {"error": "Invalid credentials in Authorization header"})
            return
        if self.path == "/api/repos/create":
            self._create_repo(user, json.loads(body))
        elif self.path == "/api/validate-yaml":
            self._reply(200, {})
        elif match := re.fullmatch(r"/api/models/(.+)/preupload/([^/?]+)(\?.*)?", self.path):
            files = json.loads(body)["files"]
            self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                        for f in files]})
        elif match := re.fullmatch(r"/api/models/(.+)/commit/([^/?]+)(\?.*)?", self.path):
            self._commit(match.group(1), match.group(2), body)
        else:
            self._reply(404, {"error": f"not implemented here: POST {self.path}"})

    def _create_repo(self, user: str, payload: dict) -> None:
        repo_id = f"{payload.get('organization') or user}/{payload['name']}"
        hub = self.server.hub
        with hub.lock:
            if repo_id in hub.repos:
                self._reply(409, {"error": "You already created this model repo", "url": self._url(repo_id)})
                return
            hub.repos[repo_id] = {"private": payload.get("visibility") == "private"}
        self._reply(200, {"url": self._url(repo_id)})

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        hub = self.server.hub
        if repo_id not in hub.repos:
            self._reply(404, {"error": "Repository not found"})
            return
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        files = {line["value"]["path"]: base64.b64decode(line["value"]["content"])
                 for line in lines if line["key"] == "file"}
        time.sleep(hub.commit_delay)
        with hub.lock:
            hub.commits.append(Commit(repo_id, revision, lines[0]["value"]["summary"], files))
        oid = hashlib.sha1(body).hexdigest()
        self._reply(200, {"commitUrl": f"{self._url(repo_id)}/commit/{oid}", "commitOid": oid})

    def _url(self, repo_id: str) -> str:
        return f"http://{self.headers['Host']}/{repo_id}"


class StubHub:
    """``with StubHub({"hf_token": "alice"}) as hub:`` serves on ``hub.endpoint`` until the block ends."""

    def __init__(self, tokens: dict, commit_delay: float = 0.0):
        self.state = HubState(tokens=dict(tokens), commit_delay=commit_delay)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.hub = self.state
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
