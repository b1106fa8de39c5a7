"""A stand-in for the Hugging Face hub, served over HTTP on 127.0.0.1 by a thread of the test
process: just the endpoints `snapshot_download`, `create_repo` and `create_commit` call
(huggingface_hub 2.x; read from its source), so `hanclip models install hf-hub:…` and
`hanclip models publish` run end to end with no network.

- GET  /api/models/ORG/NAME[/revision/REV]      repository info: the commit a revision is at
- GET  /api/models/ORG/NAME/tree/REV[/PATH]     the files at a commit (paths, sizes, git oids)
- HEAD|GET /ORG/NAME/resolve/REV/PATH           a file (commit and ETag headers; Range)
- POST /api/repos/create                        a repository, with the first commit the hub
                                                makes (`.gitattributes`)
- POST /api/models/ORG/NAME/preupload/REV       every file "regular": its bytes come base64
- POST /api/models/ORG/NAME/commit/REV          the ndjson commit: header, file, deletedFile
- POST /api/validate-yaml                       a README's metadata, always valid

Writes need `Authorization: Bearer TOKEN` with the stand-in's token; reads do not. What a
test breaks on purpose: `cut_short[PATH] = N` sends only N bytes of that file, a complete
answer shorter than the size its HEAD announced (a truncated download); `drop_once[PATH] = N`
announces the whole file, sends N bytes and closes the connection, once (a connection that
drops, which the client resumes with a Range request); `refuse_writes` answers every write 403.
Every request is kept in `requests` (method, path, headers).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

TOKEN = "hf_standin_write_token"
GITATTRIBUTES = b"*.onnx filter=lfs diff=lfs merge=lfs -text\n"


def git_oid(content: bytes) -> str:
    """The git blob id of `content`: what the hub reports as a file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> files

    def resolve(self, revision: str) -> str | None:
        if revision in self.commits:
            return revision
        return self.refs.get(revision)


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case


class HubStandIn:
    """The hub's state and the server that answers for it (a context manager)."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.cut_short: dict[str, int] = {}
        self.drop_once: dict[str, int] = {}
        self.refuse_writes = False
        self.requests: list[Seen] = []
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # -- the state, as tests set it up ------------------------------------------------------

    def commit(
        self, repo_id: str, added: dict[str, bytes], deleted: tuple[str, ...] = (), ref="main"
    ) -> str:
        """A commit on `ref` of `repo_id` (created when missing); its id."""
        with self.lock:
            repo = self.repos.setdefault(repo_id, Repo())
            parent = repo.refs.get(ref)
            files = dict(repo.commits[parent]) if parent else {}
            for path in deleted:
                files.pop(path, None)
            files.update(added)
            seed = json.dumps([parent, sorted((p, git_oid(c)) for p, c in files.items())])
            sha = hashlib.sha1(f"{seed}{len(repo.commits)}".encode()).hexdigest()
            repo.commits[sha] = files
            repo.refs[ref] = sha
            return sha

    def tag(self, repo_id: str, name: str, commit: str) -> None:
        with self.lock:
            self.repos[repo_id].refs[name] = commit

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        with self.lock:
            repo = self.repos[repo_id]
            return dict(repo.commits[repo.resolve(revision)])


def _handler(hub: HubStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        # -- plumbing --------------------------------------------------------------------

        def _segments(self) -> list[str]:
            return [unquote(s) for s in urlsplit(self.path).path.split("/") if s]

        def _send(
            self,
            status: int,
            body: bytes = b"",
            headers: dict[str, str] | None = None,
            length: int | None = None,
        ) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, data: object, headers: dict[str, str] | None = None):
            body = json.dumps(data).encode()
            self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorized(self) -> bool:
            if self.headers.get("authorization", "") != f"Bearer {TOKEN}":
                self._error(401, None, "Invalid credentials in Authorization header")
                return False
            if hub.refuse_writes:
                self._error(403, None, "You don't have the rights to write to this repository")
                return False
            return True

        def _repo(self, repo_id: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found")
            return repo

        def _commit(self, repo: Repo, revision: str) -> str | None:
            commit = repo.resolve(revision)
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return commit

        def _record(self) -> None:
            with hub.lock:
                headers = {k.lower(): v for k, v in self.headers.items()}
                hub.requests.append(Seen(self.command, self.path, headers))

        # -- verbs -----------------------------------------------------------------------

        def do_HEAD(self) -> None:
            self._record()
            self._resolve()

        def do_GET(self) -> None:
            self._record()
            s = self._segments()
            if s[:2] == ["api", "models"] and len(s) >= 4:
                repo_id = "/".join(s[2:4])
                if len(s) == 4 or (len(s) == 6 and s[4] == "revision"):
                    return self._info(repo_id, s[5] if len(s) == 6 else "main")
                if len(s) >= 6 and s[4] == "tree":
                    return self._tree(repo_id, s[5], "/".join(s[6:]))
            if len(s) >= 5 and s[2] == "resolve":
                return self._resolve()
            self._error(404, None, "no such endpoint in the stand-in")

        def do_POST(self) -> None:
            self._record()
            s = self._segments()
            body = self._body()
            if s == ["api", "validate-yaml"]:
                return self._json(200, {"errors": [], "warnings": []})
            if not self._authorized():
                return None
            if s == ["api", "repos", "create"]:
                return self._create(json.loads(body))
            if s[:2] == ["api", "models"] and len(s) == 6 and s[4] == "preupload":
                return self._preupload(f"{s[2]}/{s[3]}", json.loads(body))
            if s[:2] == ["api", "models"] and len(s) == 6 and s[4] == "commit":
                return self._commit_files(f"{s[2]}/{s[3]}", s[5], body)
            self._error(404, None, "no such endpoint in the stand-in")

        # -- endpoints -------------------------------------------------------------------

        def _info(self, repo_id: str, revision: str) -> None:
            with hub.lock:
                repo = self._repo(repo_id)
                commit = repo and self._commit(repo, revision)
                if commit is None:
                    return
                files = sorted(repo.commits[commit])
            siblings = [{"rfilename": path} for path in files]
            self._json(200, {"id": repo_id, "sha": commit, "private": False, "siblings": siblings})

        def _tree(self, repo_id: str, revision: str, under: str) -> None:
            with hub.lock:
                repo = self._repo(repo_id)
                commit = repo and self._commit(repo, revision)
                if commit is None:
                    return
                files = repo.commits[commit]
            recursive = parse_qs(urlsplit(self.path).query).get("recursive", [""])[0].lower() in (
                "1",
                "true",
            )
            prefix = f"{under}/" if under else ""
            entries, folders = [], set()
            for path, content in sorted(files.items()):
                if not path.startswith(prefix):
                    continue
                rest = path[len(prefix) :].split("/")
                for depth in range(1, len(rest)):
                    folders.add(prefix + "/".join(rest[:depth]))
                if recursive or len(rest) == 1:
                    entries.append(
                        {
                            "type": "file",
                            "path": path,
                            "size": len(content),
                            "oid": git_oid(content),
                        }
                    )
            for folder in sorted(folders):
                if recursive or "/" not in folder[len(prefix) :]:
                    entries.append({"type": "directory", "path": folder, "oid": git_oid(b"")})
            self._json(200, entries)

        def _resolve(self) -> None:
            s = self._segments()
            if len(s) < 5 or s[2] != "resolve":
                return self._error(404, None, "no such endpoint in the stand-in")
            repo_id, revision, path = f"{s[0]}/{s[1]}", s[3], "/".join(s[4:])
            with hub.lock:
                repo = self._repo(repo_id)
                commit = repo and self._commit(repo, revision)
                if commit is None:
                    return None
                content = repo.commits[commit].get(path)
                short = hub.cut_short.get(path)
                drop = hub.drop_once.pop(path, None) if self.command == "GET" else None
            headers = {"X-Repo-Commit": commit}
            if content is None:
                return self._error(404, "EntryNotFound", f"{path} does not exist", headers)
            headers["ETag"] = f'"{git_oid(content)}"'
            if self.command == "HEAD":
                return self._send(200, b"", headers, length=len(content))
            start = 0
            wanted = self.headers.get("Range", "")
            if wanted.startswith("bytes=") and wanted.endswith("-"):
                start = int(wanted[len("bytes=") : -1])
            body = content[start:]
            if short is not None:
                body = body[: max(short - start, 0)]
            status = 206 if start else 200
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
            if drop is not None:
                self.close_connection = True
                return self._send(status, body[:drop], headers, length=len(body))
            self._send(status, body, headers)

        def _error(self, status: int, code: str | None, message: str, headers=None) -> None:
            extra = dict(headers or {})
            if code:
                extra["X-Error-Code"] = code
            self._json(status, {"error": message}, extra)

        def _create(self, payload: dict) -> None:
            repo_id = f"{payload.get('organization')}/{payload['name']}"
            with hub.lock:
                exists = repo_id in hub.repos
            if exists:
                # The hub's answer carries the repository's address, which create_repo reads.
                body = {
                    "error": "You already created this model repo",
                    "url": f"{hub.url}/{repo_id}",
                }
                return self._json(409, body)
            hub.commit(repo_id, {".gitattributes": GITATTRIBUTES})
            self._json(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})

        def _preupload(self, repo_id: str, payload: dict) -> None:
            with hub.lock:
                if self._repo(repo_id) is None:
                    return
            files = [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                for f in payload["files"]
            ]
            self._json(200, {"files": files})

        def _commit_files(self, repo_id: str, revision: str, body: bytes) -> None:
            with hub.lock:
                if self._repo(repo_id) is None:
                    return
            added, deleted = {}, []
            for line in body.splitlines():
                item = json.loads(line)
                value = item["value"]
                if item["key"] == "file":
                    assert value["encoding"] == "base64"
                    added[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] == "deletedFile":
                    deleted.append(value["path"])
                elif item["key"] != "header":
                    return self._error(400, None, f"the stand-in takes no {item['key']}")
            commit = hub.commit(repo_id, added, tuple(deleted), ref=revision)
            url = f"{hub.url}/{repo_id}/commit/{commit}"
            self._json(200, {"commitUrl": url, "commitOid": commit})

    return Handler
