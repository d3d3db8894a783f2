"""A small Hugging Face Hub API server for tests: what ``huggingface_hub`` calls to create, configure (visibility),
delete, commit to, list, describe and download repos, with token auth, private repos, commit history and
injectable failures (an HTTP status, a dropped connection, a late answer).

Storage is in memory. Users and tokens are fixed (``alice``, ``bob``; the org ``lamp-lab`` has ``alice``).
Run ``python tests/hub_server.py`` to serve it by hand."""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

ALICE = "hf_alice_token"
BOB = "hf_bob_token"
ALICE_READ_ONLY = "hf_alice_readonly"  # a read-only token of alice
TOKENS = {ALICE: "alice", BOB: "bob", ALICE_READ_ONLY: "alice"}
READ_ONLY_TOKENS = {ALICE_READ_ONLY}
ORGS = {"lamp-lab": {"alice"}}
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    files: dict[str, bytes]


@dataclass
class Repo:
    id: str
    private: bool
    created_at: str
    commits: list[Commit] = field(default_factory=list)  # oldest first

    @property
    def namespace(self) -> str:
        return self.id.split("/")[0]

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def card_data(self) -> dict[str, Any]:
        readme = self.head.files.get("README.md", b"").decode("utf-8", "replace")
        m = re.match(r"^---\n(.*?)\n---", readme, re.S)
        try:
            data = yaml.safe_load(m.group(1)) if m else None
        except yaml.YAMLError:
            data = None
        return data if isinstance(data, dict) else {}

    def tags(self) -> list[str]:
        data = self.card_data()
        tags = [str(t) for t in data.get("tags") or []]
        if data.get("library_name"):
            tags.append(str(data["library_name"]))
        if data.get("base_model"):
            tags.append(f"base_model:{data['base_model']}")
        return tags


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class FakeHub:
    """The server state plus a ``ThreadingHTTPServer`` on 127.0.0.1 (a free port): ``start()``, ``stop()``,
    ``url``. ``fail_next(kind, ...)`` makes the next matching request(s) fail (``kind`` is an endpoint name:
    ``commit``, ``preupload``, ``create``, ``settings``, ``resolve``...), by an HTTP status, by dropping the
    connection or by answering late; ``settings_changes`` records each visibility change; ``reveal_private`` makes
    it answer 403 (exists, no access) instead of "not found" for private repos the caller may not read."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, user)
        self._failures: list[dict[str, Any]] = []
        self.settings_changes: list[tuple[str, bool]] = []  # (repo id, private)
        # True: a private repo the caller may not read is answered 403 (it exists, no access), as a Hub that does
        # not hide private repos (or a scoped token's) would; False: 401/404 "not found", as the Hub answers.
        self.reveal_private = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------------------
    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            state = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- test controls ----------------------------------------------------------------------------------------
    def fail_next(self, kind: str, *, status: int | None = 500, times: int = 1, disconnect: bool = False,
                  delay: float = 0.0, after: bool = False) -> None:
        """Fail the next ``times`` requests of endpoint ``kind``: answer ``status``, or close the connection
        (``disconnect``), or answer only after ``delay`` seconds (a client with a shorter timeout gives up).
        ``after``: the request is carried out first (a commit lands) and only its answer is lost or late."""
        with self.lock:
            self._failures.append({"kind": kind, "status": status, "left": times, "disconnect": disconnect,
                                   "delay": delay, "after": after or bool(delay)})

    def take_failure(self, kind: str) -> dict[str, Any] | None:
        with self.lock:
            for f in self._failures:
                if f["kind"] == kind and f["left"] > 0:
                    f["left"] -= 1
                    return f
        return None

    def calls(self, kind_fragment: str) -> int:
        return sum(kind_fragment in path for _, path, _ in self.requests)

    # -- auth -------------------------------------------------------------------------------------------------
    def can_read(self, repo: Repo, user: str | None) -> bool:
        return not repo.private or self.can_write(repo.namespace, user)

    def can_write(self, namespace: str, user: str | None) -> bool:
        return user is not None and (namespace == user or user in ORGS.get(namespace, set()))

    def readable(self, repo_id: str, user: str | None) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is not None and not self.can_read(repo, user) and self.reveal_private:
            raise HubError(403, f"You don't have access to {repo_id}")
        if repo is None or not self.can_read(repo, user):
            # The Hub answers 401 to anonymous callers and 404 to others, RepoNotFound either way.
            raise HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        return repo

    def writable(self, repo_id: str, user: str | None, token: str | None) -> Repo:
        repo = self.readable(repo_id, user)
        if not self.can_write(repo.namespace, user) or token in READ_ONLY_TOKENS:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    @staticmethod
    def resolve(repo: Repo, revision: str) -> Commit:
        revision = unquote(revision)
        if revision == "main":
            return repo.head
        for c in reversed(repo.commits):
            if len(revision) >= 7 and c.oid.startswith(revision):
                return c
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    # -- operations -------------------------------------------------------------------------------------------
    def add_commit(self, repo: Repo, files: dict[str, bytes | None], title: str, message: str, author: str,
                   parent: str | None = None) -> Commit:
        with self.lock:
            if parent is not None and repo.commits and repo.head.oid != parent:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(repo.head.files) if repo.commits else {}
            for path, content in files.items():
                if content is None:
                    tree.pop(path, None)
                else:
                    tree[path] = content
            digest = hashlib.sha1()
            digest.update(json.dumps([repo.commits[-1].oid if repo.commits else None, title, message, _now(),
                                      len(repo.commits)]).encode())
            for path in sorted(tree):
                digest.update(path.encode() + b"\0" + git_blob_sha(tree[path]).encode())
            commit = Commit(digest.hexdigest(), repo.head.oid if repo.commits else None, title, message, author,
                            _now(), tree)
            repo.commits.append(commit)
            return commit

    def model_json(self, repo: Repo, commit: Commit | None = None) -> dict[str, Any]:
        commit = commit or repo.head
        data = repo.card_data()
        return {
            "_id": hashlib.md5(repo.id.encode()).hexdigest()[:24], "id": repo.id, "modelId": repo.id,
            "author": repo.namespace, "sha": commit.oid, "private": repo.private, "gated": False,
            "disabled": False, "downloads": 0, "likes": 0, "tags": repo.tags(),
            "library_name": data.get("library_name"), "pipeline_tag": data.get("pipeline_tag"),
            "createdAt": repo.created_at, "lastModified": repo.head.date, "cardData": data or None,
            "siblings": [{"rfilename": p} for p in sorted(commit.files)],
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: FakeHub

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # -- plumbing ---------------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None,
              raw: bytes | None = None, head: bool = False) -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _handle(self, method: str) -> None:
        state = self.state
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        body = self._body() if method in ("POST", "PUT", "DELETE") else b""
        token = self._token()
        user = TOKENS.get(token) if token else None
        with state.lock:
            state.requests.append((method, path, user))
        try:
            if token and user is None:
                raise HubError(401, "Invalid credentials in Authorization header")
            route = self._route(method, path)
            if route is None:
                raise HubError(404, f"no route {method} {path}")
            kind, handler, args = route
            failure = state.take_failure(kind)
            if failure is not None and not failure["after"]:
                self._fail(kind, failure)
                return
            status, payload, headers, raw = handler(*args, user=user, token=token, query=query, body=body)
            if failure is not None:
                self._fail(kind, failure)
                return
            self._send(status, payload, headers, raw, head=method == "HEAD")
        except HubError as e:
            headers = {"X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._send(e.status, {"error": e.message, **e.extra}, headers, head=method == "HEAD")

    def _fail(self, kind: str, failure: dict[str, Any]) -> None:
        if failure["delay"]:
            threading.Event().wait(failure["delay"])
        if failure["disconnect"] or failure["delay"]:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)  # drop the connection without answering
            return
        raise HubError(failure["status"], f"injected failure of {kind}")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _route(self, method: str, path: str):
        rid = r"(?P<repo>[\w.-]+/[\w.-]+)"
        table = [
            ("GET", r"/api/whoami-v2", "whoami", self.whoami),
            ("GET", r"/api/agent-harnesses", "harnesses",
             lambda **kw: (200, {"standardEnvVars": [], "harnesses": {}}, None, None)),
            ("POST", r"/api/repos/create", "create", self.create_repo),
            ("DELETE", r"/api/repos/delete", "delete", self.delete_repo),
            ("PUT", rf"/api/models/{rid}/settings", "settings", self.settings),
            ("POST", r"/api/validate-yaml", "validate-yaml", self.validate_yaml),
            ("GET", r"/api/models", "list", self.list_models),
            ("POST", rf"/api/models/{rid}/preupload/(?P<rev>[^/]+)", "preupload", self.preupload),
            ("POST", rf"/api/models/{rid}/commit/(?P<rev>[^/]+)", "commit", self.commit),
            ("GET", rf"/api/models/{rid}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?", "tree", self.tree),
            ("GET", rf"/api/models/{rid}/commits/(?P<rev>[^/]+)", "commits", self.commits),
            ("GET", rf"/api/models/{rid}/revision/(?P<rev>[^/]+)", "info", self.model_info),
            ("GET", rf"/api/models/{rid}", "info", self.model_info),
            ("GET|HEAD", rf"/{rid}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", "resolve", self.resolve),
        ]
        for methods, pattern, kind, handler in table:
            m = re.fullmatch(pattern, path)
            if m and method in methods.split("|"):
                return kind, handler, tuple(v for v in m.groupdict().values())
        return None

    # -- endpoints --------------------------------------------------------------------------------------------
    def whoami(self, *, user, token, **_):
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        role = "read" if token in READ_ONLY_TOKENS else "write"
        orgs = [{"type": "org", "name": org} for org, members in ORGS.items() if user in members]
        return 200, {"type": "user", "id": user, "name": user, "fullname": user.title(), "orgs": orgs,
                     "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": role}}}, None, None

    def create_repo(self, *, user, token, body, **_):
        state = self.state
        if user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        payload = json.loads(body or b"{}")
        namespace = payload.get("organization") or user
        repo_id = f"{namespace}/{payload['name']}"
        if payload.get("type", "model") not in (None, "model"):
            raise HubError(400, "only model repos here")
        if not state.can_write(namespace, user) or token in READ_ONLY_TOKENS:
            raise HubError(403, f"You don't have the rights to create a model under the namespace \"{namespace}\"")
        with state.lock:
            if repo_id in state.repos:
                raise HubError(409, "You already created this model repo", url=f"{self._base()}/{repo_id}")
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            repo = Repo(repo_id, private, _now())
            state.repos[repo_id] = repo
            state.add_commit(repo, {".gitattributes": GITATTRIBUTES}, "initial commit", "", user)
        return 200, {"url": f"{self._base()}/{repo_id}", "name": repo_id, "id": repo_id}, None, None

    def delete_repo(self, *, user, token, body, **_):
        payload = json.loads(body or b"{}")
        repo_id = f"{payload.get('organization') or user}/{payload['name']}"
        self.state.writable(repo_id, user, token)
        with self.state.lock:
            del self.state.repos[repo_id]
        return 200, {}, None, None

    def settings(self, repo_id, *, user, token, body, **_):
        """PUT /api/models/{repo}/settings: ``{"visibility": "private"|"public"}`` (what huggingface_hub sends) or
        the older ``{"private": bool}``; ``gated`` is accepted and ignored. Only a writer may change them."""
        repo = self.state.writable(repo_id, user, token)
        payload = json.loads(body or b"{}")
        if "visibility" in payload:
            if payload["visibility"] not in ("private", "public"):
                raise HubError(400, f"invalid visibility {payload['visibility']!r} for a model")
            private = payload["visibility"] == "private"
        elif isinstance(payload.get("private"), bool):
            private = payload["private"]
        elif "gated" in payload:
            return 200, {}, None, None
        else:
            raise HubError(400, "nothing to update: expected 'visibility', 'private' or 'gated'")
        with self.state.lock:
            repo.private = private
            self.state.settings_changes.append((repo_id, private))
        return 200, {}, None, None

    def validate_yaml(self, *, body, **_):
        content = json.loads(body).get("content", "")
        m = re.match(r"^---\n(.*?)\n---", content, re.S)
        if m:
            try:
                data = yaml.safe_load(m.group(1))
            except yaml.YAMLError as e:
                return 400, {"errors": [{"message": f"invalid YAML: {e}"}], "warnings": []}, None, None
            if data is not None and not isinstance(data, dict):
                return 400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []}, None, None
        return 200, {"errors": [], "warnings": []}, None, None

    def list_models(self, *, user, query, **_):
        state = self.state
        author = (query.get("author") or [None])[0]
        wanted = set(query.get("filter") or [])
        search = (query.get("search") or [None])[0]
        out = []
        with state.lock:
            for repo in sorted(state.repos.values(), key=lambda r: r.id):
                if not state.can_read(repo, user) or (author and repo.namespace != author):
                    continue
                if not wanted <= set(repo.tags()) or (search and search not in repo.id):
                    continue
                info = state.model_json(repo)
                info.pop("siblings")
                info.pop("cardData")
                out.append(info)
        return 200, out, None, None

    def preupload(self, repo_id, rev, *, user, token, body, **_):
        repo = self.state.writable(repo_id, user, token)
        commit = self.state.resolve(repo, rev)
        files = []
        for f in json.loads(body)["files"]:
            existing = commit.files.get(f["path"])
            files.append({"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                          "oid": git_blob_sha(existing) if existing is not None else None})
        return 200, {"files": files, "commitOid": commit.oid}, None, None

    def commit(self, repo_id, rev, *, user, token, body, **_):
        state = self.state
        repo = state.writable(repo_id, user, token)
        if unquote(rev) != "main":
            raise HubError(400, "this test hub commits to main only")
        header: dict[str, Any] = {}
        files: dict[str, bytes | None] = {}
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, "file content must be base64")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files[value["path"]] = None
            else:
                raise HubError(400, f"unsupported commit operation {key!r} (this hub takes regular files only)")
        commit = state.add_commit(repo, files, header.get("summary") or "update", header.get("description") or "",
                                  user, parent=header.get("parentCommit"))
        return 200, {"success": True, "commitOid": commit.oid,
                     "commitUrl": f"{self._base()}/{repo_id}/commit/{commit.oid}"}, None, None

    def model_info(self, repo_id, rev=None, *, user, **_):
        repo = self.state.readable(repo_id, user)
        commit = self.state.resolve(repo, rev or "main")
        return 200, self.state.model_json(repo, commit), None, None

    def tree(self, repo_id, rev, sub=None, *, user, **_):
        repo = self.state.readable(repo_id, user)
        commit = self.state.resolve(repo, rev)
        prefix = f"{sub.strip('/')}/" if sub else ""
        entries = [{"type": "file", "oid": git_blob_sha(data), "size": len(data), "path": path}
                   for path, data in sorted(commit.files.items()) if path.startswith(prefix)]
        return 200, entries, None, None

    def commits(self, repo_id, rev, *, user, **_):
        repo = self.state.readable(repo_id, user)
        head = self.state.resolve(repo, rev)
        history = repo.commits[: repo.commits.index(head) + 1]
        return 200, [{"id": c.oid, "title": c.title, "message": c.message, "date": c.date,
                      "authors": [{"user": c.author}]} for c in reversed(history)], None, None

    def resolve(self, repo_id, rev, file, *, user, **_):
        repo = self.state.readable(repo_id, user)
        commit = self.state.resolve(repo, rev)
        if file not in commit.files:
            raise HubError(404, f"{file} not found", "EntryNotFound")
        data = commit.files[file]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{git_blob_sha(data)}"', "Accept-Ranges": "bytes"}
        return 200, None, headers, data

    def _base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"


if __name__ == "__main__":
    import time

    with FakeHub() as hub:
        print(f"fake hub at {hub.url}; tokens: {', '.join(TOKENS)}", flush=True)
        while True:
            time.sleep(3600)
