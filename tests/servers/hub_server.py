"""A loopback Hugging Face Hub for tests: the real `huggingface_hub`, `datasets` and `transformers` clients push
to it and load from it, and nothing ever reaches huggingface.co.

Design choices:
- stdlib only (`http.server.ThreadingHTTPServer`, HTTP/1.1 keep-alive), bound to 127.0.0.1, every request body
  capped at `max_request_bytes`. Clients find it through `HF_ENDPOINT`, which huggingface_hub reads at import
  time (tests/conftest.py sets it first), with `HF_HUB_DISABLE_XET=1` so uploads take the git-LFS path.
- State lives in a directory, so a server restarted on the same `root` sees the same repos:
  `objects/<sha256>` holds every file content once (regular and LFS alike); `repos/<type>/<ns>/<name>/repo.json`
  holds settings, branches and tags; `.../commits/<id>.json` holds one commit with its parent and the complete
  flat file table. A commit id is the sha1 of that JSON; a revision is a branch, a tag or a full commit id.
- Ids are real git ids where the client compares them: a regular file's `oid` is its git blob sha1, an LFS
  file's `oid` is the git blob sha1 of its pointer file and its LFS oid is the content sha256.
- Like the Hub: a new repo starts with an "initial commit" holding a `.gitattributes`; preupload answers "lfs"
  when a file reaches `lfs_threshold`, matches an LFS pattern of that `.gitattributes`, or looks binary; LFS
  batch actions point back at this server (`/lfs/<oid>`, multipart when `multipart_chunk_size` is set), and
  uploads are accepted only for announced oids whose bytes hash to that oid.
- Auth: a single fake `token`. Reads of public repos are anonymous; writes and private repos need it; a wrong
  token is a 401 everywhere. Errors carry the `X-Error-Code` header the client maps to its exception types.
- Every request is logged in `requests` as (method, unquoted path); a route this server lacks answers 404 with
  a message naming it and is recorded in `unknown_routes`, so a failing test says what is missing.
- Collections: create, get and add an item (what hub/collection.py uses), one JSON file each.
- Not supported: pull requests (`create_pr`), discussions, Xet storage, `.gitignore` (`shouldIgnore` is always
  false), pagination (one page always) and canonical single-segment repo ids such as "gpt2".

Manual try: `python tests/servers/hub_server.py --root /tmp/hub --port 8765`, then
`HF_ENDPOINT=http://127.0.0.1:8765 HF_HUB_DISABLE_XET=1 HF_TOKEN=hf_test_token python ...`.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import traceback
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

__all__ = ["HubServer"]

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
# A short version of the Hub's default: weights, archives, columnar data and media go to LFS whatever their size.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.bin *.safetensors *.pt *.pth *.ckpt *.h5 *.onnx *.msgpack *.model *.gguf *.npy *.npz *.pkl "
        "*.arrow *.parquet *.zip *.tar *.gz *.zst *.png *.jpg *.jpeg *.webp *.mp3 *.wav *.mp4"
    ).split()
)
SHA1_RE = re.compile(r"[0-9a-f]{40}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
REPO_ID_RE = re.compile(r"[\w.-]{1,96}/[\w.-]{1,96}")  # the Hub's rule; also keeps ids from escaping `root`


class HubError(Exception):
    """An HTTP error answer; `code` becomes the `X-Error-Code` header that huggingface_hub turns into
    RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError..."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, **fields):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}
        self.fields = fields


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _check_repo_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


def _check_repo_id(repo_id: str) -> str:
    if not REPO_ID_RE.fullmatch(repo_id) or ".." in repo_id:
        raise HubError(400, f"Invalid repo id {repo_id!r}: expected 'namespace/name' of letters, digits, '-', '_', '.'")
    return repo_id


def _front_matter(readme: str) -> str | None:
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", readme, re.S)
    return match.group(1) if match else None


def _card_data(readme: bytes) -> dict | None:
    """The YAML front matter of a README.md as the Hub returns it in `cardData` (None when absent or invalid)."""
    try:
        data = yaml.safe_load(_front_matter(readme.decode("utf-8", "replace")) or "")
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


class _Repo:
    """One repository on disk: settings, refs (`repo.json`) and immutable commits (`commits/<id>.json`)."""

    def __init__(self, store: "_Store", repo_type: str, repo_id: str):
        self.store, self.type, self.id = store, repo_type, repo_id
        self.dir = store.root / "repos" / repo_type / repo_id
        self.meta = json.loads((self.dir / "repo.json").read_text())

    def save(self) -> None:
        tmp = self.dir / "repo.json.tmp"
        tmp.write_text(json.dumps(self.meta, indent=1))
        os.replace(tmp, self.dir / "repo.json")

    def read_commit(self, commit_id: str) -> dict:
        return json.loads((self.dir / "commits" / f"{commit_id}.json").read_text())

    def resolve(self, revision: str) -> dict:
        """The commit a branch, tag or full commit id points to."""
        commit_id = self.meta["branches"].get(revision) or self.meta["tags"].get(revision)
        if commit_id is None and SHA1_RE.fullmatch(revision) and (self.dir / "commits" / f"{revision}.json").exists():
            commit_id = revision
        if commit_id is None:
            raise HubError(404, f"Revision {revision!r} not found in {self.type} {self.id}", "RevisionNotFound")
        return self.read_commit(commit_id)

    def write_commit(self, branch: str, parent: dict | None, title: str, message: str, files: dict) -> dict:
        commit = {
            "parents": [parent["id"]] if parent else [],
            "title": title,
            "message": message,
            "date": _now(),
            "authors": [self.store.user],
            "files": files,
        }
        commit["id"] = hashlib.sha1(json.dumps(commit, sort_keys=True).encode()).hexdigest()
        (self.dir / "commits" / f"{commit['id']}.json").write_text(json.dumps(commit))
        self.meta["branches"][branch] = commit["id"]
        self.save()
        return commit

    def history(self, commit: dict):
        while True:
            yield commit
            if not commit["parents"]:
                return
            commit = self.read_commit(commit["parents"][0])

    @property
    def url_path(self) -> str:
        return URL_PREFIXES[self.type] + self.id


class _Store:
    """Repositories and content-addressed objects under `root`; one lock serialises every change."""

    def __init__(self, root: Path, user: str):
        self.root, self.user = root, user
        self.lock = threading.RLock()
        for sub in ("objects", "repos", "uploads"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def repo(self, repo_type: str, repo_id: str) -> _Repo:
        _check_repo_id(repo_id)
        if not (self.root / "repos" / repo_type / repo_id / "repo.json").exists():
            raise HubError(404, f"Repository {repo_type} {repo_id} not found", "RepoNotFound")
        return _Repo(self, repo_type, repo_id)

    def create_repo(self, repo_type: str, repo_id: str, private: bool, sdk: str | None) -> _Repo | None:
        """The new repo, or None when it already exists."""
        _check_repo_id(repo_id)
        repo_dir = self.root / "repos" / repo_type / repo_id
        if (repo_dir / "repo.json").exists():
            return None
        (repo_dir / "commits").mkdir(parents=True, exist_ok=True)
        meta = {"private": private, "sdk": sdk, "createdAt": _now(), "branches": {}, "tags": {}}
        (repo_dir / "repo.json").write_text(json.dumps(meta))
        repo = _Repo(self, repo_type, repo_id)
        attributes = self.entry(DEFAULT_GITATTRIBUTES.encode(), lfs=False)
        repo.write_commit("main", None, "initial commit", "", {".gitattributes": attributes})
        return repo

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        self.repo(repo_type, repo_id)  # 404 if missing
        shutil.rmtree(self.root / "repos" / repo_type / repo_id)

    def object_path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256

    def put_object(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.object_path(sha256)
        if not path.exists():
            with tempfile.NamedTemporaryFile(dir=self.root / "uploads", delete=False) as tmp:
                tmp.write(data)
            os.replace(tmp.name, path)
        return sha256

    def entry(self, data: bytes, lfs: bool) -> dict:
        """Store `data` and return its file-table entry."""
        sha256 = self.put_object(data)
        if lfs:
            return self.lfs_entry(sha256, len(data))
        return {"oid": _git_blob_id(data), "size": len(data), "sha256": sha256, "lfs": False}

    @staticmethod
    def lfs_entry(sha256: str, size: int) -> dict:
        pointer = LFS_POINTER.format(oid=sha256, size=size).encode()
        return {"oid": _git_blob_id(pointer), "size": size, "sha256": sha256, "lfs": True, "pointerSize": len(pointer)}

    def read(self, entry: dict) -> bytes:
        return self.object_path(entry["sha256"]).read_bytes()


def _lfs_patterns(store: _Store, files: dict) -> list[str]:
    if ".gitattributes" not in files:
        return []
    patterns = []
    for line in store.read(files[".gitattributes"]).decode("utf-8", "replace").splitlines():
        tokens = line.split()
        if len(tokens) > 1 and not tokens[0].startswith("#") and "filter=lfs" in tokens[1:]:
            patterns.append(tokens[0])
    return patterns


def _matches(path: str, pattern: str) -> bool:
    # gitattributes: a pattern without "/" matches the file name at any depth, one with "/" the whole path
    if "/" in pattern:
        return fnmatch.fnmatchcase(path, pattern.lstrip("/"))
    return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)


def _tree_item(path: str, entry: dict) -> dict:
    item = {"type": "file", "path": path, "oid": entry["oid"], "size": entry["size"]}
    if entry["lfs"]:
        item["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": entry["pointerSize"]}
    return item


def _folders(files: dict) -> dict[str, str]:
    """Every folder of a file table with a tree id derived from what it contains."""
    contents: dict[str, list[str]] = {}
    for path in sorted(files):
        parts = path.split("/")
        for depth in range(1, len(parts)):
            contents.setdefault("/".join(parts[:depth]), []).append(f"{path} {files[path]['oid']}")
    return {folder: hashlib.sha1("\n".join(lines).encode()).hexdigest() for folder, lines in contents.items()}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the clients reuse connections
    server: "_HTTPServer"

    # ---- plumbing -------------------------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format, *args):  # the request log is `HubServer.requests`, stderr stays quiet
        pass

    def _dispatch(self) -> None:
        hub = self.server.hub
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        hub.requests.append((self.command, unquote(split.path)))
        try:
            self.body = self._read_body()
            for method, pattern, name in _ROUTES:
                match = pattern.fullmatch(split.path)
                if match and self.command in method.split("|"):
                    params = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                    if "repo" in params:  # model repos have no type prefix in git and resolve URLs
                        params["type"] = REPO_TYPES[params.get("type", "models")]
                    getattr(self, name)(**params)
                    return
            hub.unknown_routes.append((self.command, split.path))
            raise HubError(404, f"hf_llava test Hub server: no route for {self.command} {split.path}")
        except HubError as err:
            headers = dict(err.headers)
            if err.code:
                headers["X-Error-Code"] = err.code
            headers["X-Error-Message"] = err.message.encode("ascii", "replace").decode()
            self._json({"error": err.message, **err.fields}, err.status, headers)
        except Exception:
            hub.errors.append(traceback.format_exc())
            self._json({"error": "hf_llava test Hub server crashed:\n" + traceback.format_exc()}, 500)

    def _read_body(self) -> bytes:
        limit = self.server.hub.max_request_bytes
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks, total = [], 0
            while size := int(self.rfile.readline().split(b";")[0], 16):
                total += size
                if total > limit:
                    self.close_connection = True
                    raise HubError(413, f"Request body larger than the server limit of {limit} bytes")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            self.close_connection = True  # the unread body would be taken for the next request
            raise HubError(413, f"Request body of {length} bytes is larger than the server limit of {limit} bytes")
        return self.rfile.read(length)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _json_body(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as err:
            raise HubError(400, f"Request body is not JSON: {err}") from None

    # ---- auth -----------------------------------------------------------------------------------------------
    def _authenticated(self) -> bool:
        header = self.headers.get("Authorization")
        if header is None:
            return False
        if header != f"Bearer {self.server.hub.token}":
            raise HubError(401, "Invalid credentials in Authorization header")
        return True

    def _require_token(self) -> None:
        if not self._authenticated():
            raise HubError(401, "Authentication required: pass the test server's token (HubServer.token)")

    def _repo(self, repo_type: str, repo: str, write: bool = False) -> _Repo:
        authenticated = self._authenticated()
        if write and not authenticated:
            self._require_token()
        found = self.server.hub.store.repo(repo_type, repo)
        if found.meta["private"] and not authenticated:
            raise HubError(404, f"Repository {repo_type} {repo} not found", "RepoNotFound")
        return found

    # ---- account and repos ----------------------------------------------------------------------------------
    def whoami(self) -> None:
        self._require_token()
        user = self.server.hub.store.user
        self._json({"type": "user", "id": user, "name": user, "fullname": user, "orgs": [],
                    "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}})

    def create_repo(self) -> None:
        self._require_token()
        payload = self._json_body()
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"Unsupported repo type {repo_type!r}")
        repo_id = self._payload_repo_id(payload)
        private = payload.get("visibility", "private" if payload.get("private") else "public") == "private"
        url = f"{self.server.hub.url}/{URL_PREFIXES[repo_type]}{repo_id}"
        with self.server.hub.store.lock:
            created = self.server.hub.store.create_repo(repo_type, repo_id, private, payload.get("sdk"))
        if created is None:
            raise HubError(409, f"You already created this {repo_type} repo", url=url)
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def _payload_repo_id(self, payload: dict) -> str:
        # repo ids without a namespace belong to the token's user, as on the Hub
        return _check_repo_id(f"{payload.get('organization') or self.server.hub.store.user}/{payload.get('name', '')}")

    def delete_repo(self) -> None:
        self._require_token()
        payload = self._json_body()
        repo_id = self._payload_repo_id(payload)
        with self.server.hub.store.lock:
            self.server.hub.store.delete_repo(payload.get("type") or "model", repo_id)
        self._json({})

    def validate_yaml(self) -> None:
        try:
            metadata = yaml.safe_load(_front_matter(self._json_body().get("content", "")) or "{}")
        except yaml.YAMLError as err:
            raise HubError(400, "Invalid YAML metadata in README.md", errors=[{"message": str(err)}]) from None
        if not isinstance(metadata, dict):
            raise HubError(400, "README.md metadata must be a YAML mapping", errors=[{"message": repr(metadata)}])
        self._json({"errors": [], "warnings": []})

    def repo_info(self, type: str, repo: str, rev: str = "main") -> None:
        found = self._repo(type, repo)
        commit = found.resolve(rev)
        store = self.server.hub.store
        with_blobs = self.query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for path, entry in sorted(commit["files"].items()):
            sibling = {"rfilename": path}
            if with_blobs:
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if entry["lfs"]:
                    sibling["lfs"] = {
                        "size": entry["size"], "sha256": entry["sha256"], "pointerSize": entry["pointerSize"]
                    }
            siblings.append(sibling)
        readme = commit["files"].get("README.md")
        info = {
            "_id": hashlib.sha1(f"{type}/{repo}".encode()).hexdigest()[:24],
            "id": repo,
            "author": repo.split("/")[0],
            "sha": commit["id"],
            "lastModified": commit["date"],
            "createdAt": found.meta["createdAt"],
            "private": found.meta["private"],
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "cardData": _card_data(store.read(readme)) if readme else None,
            "siblings": siblings,
            "usedStorage": sum(entry["size"] for entry in commit["files"].values()),
        }
        if type == "space":
            info["sdk"] = found.meta["sdk"]
        self._json(info)

    # ---- listing --------------------------------------------------------------------------------------------
    def _items(self, found: _Repo, commit: dict, paths, expand: bool) -> list[dict]:
        files, folders = commit["files"], _folders(commit["files"])
        items = []
        for path in paths:
            if path in files:
                items.append(_tree_item(path, files[path]))
            elif path in folders:
                items.append({"type": "directory", "path": path, "oid": folders[path], "size": 0})
        if expand:
            for item in items:
                item["lastCommit"] = self._last_commit(found, commit, item["path"])
        return items

    @staticmethod
    def _last_commit(found: _Repo, commit: dict, path: str) -> dict:
        """The most recent commit that changed `path` (a file, or anything inside a folder)."""

        def state(files: dict) -> list:
            return sorted((p, e["oid"]) for p, e in files.items() if p == path or p.startswith(path + "/"))

        latest = commit
        for older in found.history(commit):
            if state(older["files"]) != state(commit["files"]):
                break
            latest = older
        return {"id": latest["id"], "title": latest["title"], "date": latest["date"]}

    def tree(self, type: str, repo: str, rev: str, path: str = "") -> None:
        found = self._repo(type, repo)
        commit = found.resolve(rev)
        path = path.strip("/")
        folders = _folders(commit["files"])
        if path and path not in folders:
            raise HubError(404, f"Folder {path!r} not found at {rev}", "EntryNotFound", {"X-Repo-Commit": commit["id"]})
        recursive = self.query.get("recursive", ["false"])[0].lower() == "true"
        prefix = path + "/" if path else ""
        below = [p for p in [*folders, *commit["files"]] if p.startswith(prefix)]
        if not recursive:
            below = [p for p in below if "/" not in p[len(prefix):]]
        expand = self.query.get("expand", ["false"])[0].lower() == "true"
        self._json(self._items(found, commit, sorted(below), expand))

    def paths_info(self, type: str, repo: str, rev: str) -> None:
        found = self._repo(type, repo)
        form = parse_qs(self.body.decode())
        paths = [p.strip("/") for p in form.get("paths", [])]
        expand = form.get("expand", ["false"])[0].lower() == "true"
        self._json(self._items(found, found.resolve(rev), paths, expand))

    def refs(self, type: str, repo: str) -> None:
        found = self._repo(type, repo)

        def refs(kind: str, prefix: str) -> list[dict]:
            return [{"name": name, "ref": f"{prefix}{name}", "targetCommit": commit_id}
                    for name, commit_id in sorted(found.meta[kind].items())]

        self._json({"branches": refs("branches", "refs/heads/"), "tags": refs("tags", "refs/tags/"),
                    "converts": [], "pullRequests": []})

    def commits(self, type: str, repo: str, rev: str) -> None:
        found = self._repo(type, repo)
        self._json([
            {"id": c["id"], "title": c["title"], "message": c["message"], "date": c["date"],
             "authors": [{"user": user} for user in c["authors"]]}
            for c in found.history(found.resolve(rev))
        ])

    # ---- branches and tags ----------------------------------------------------------------------------------
    def create_branch(self, type: str, repo: str, branch: str) -> None:
        self._repo(type, repo, write=True)
        with self.server.hub.store.lock:
            found = self.server.hub.store.repo(type, repo)  # fresh refs under the lock
            if branch in found.meta["branches"]:
                raise HubError(409, f"Branch {branch!r} already exists")
            start = found.resolve(self._json_body().get("startingPoint") or "main")
            found.meta["branches"][branch] = start["id"]
            found.save()
        self._json({})

    def delete_branch(self, type: str, repo: str, branch: str) -> None:
        self._repo(type, repo, write=True)
        with self.server.hub.store.lock:
            found = self.server.hub.store.repo(type, repo)
            if branch == "main" or found.meta["branches"].pop(branch, None) is None:
                raise HubError(400 if branch == "main" else 404, f"Cannot delete branch {branch!r}")
            found.save()
        self._json({})

    def create_tag(self, type: str, repo: str, rev: str) -> None:
        self._repo(type, repo, write=True)
        tag = self._json_body().get("tag")
        with self.server.hub.store.lock:
            found = self.server.hub.store.repo(type, repo)
            if not tag or tag in found.meta["tags"]:
                raise HubError(409 if tag else 400, f"Tag {tag!r} already exists" if tag else "No tag name given")
            found.meta["tags"][tag] = found.resolve(rev)["id"]
            found.save()
        self._json({})

    def delete_tag(self, type: str, repo: str, tag: str) -> None:
        self._repo(type, repo, write=True)
        with self.server.hub.store.lock:
            found = self.server.hub.store.repo(type, repo)
            if found.meta["tags"].pop(tag, None) is None:
                raise HubError(404, f"Tag {tag!r} not found", "RevisionNotFound")
            found.save()
        self._json({})

    # ---- uploads: preupload, commit ---------------------------------------------------------------------------
    def preupload(self, type: str, repo: str, rev: str) -> None:
        if self.query.get("create_pr"):
            raise HubError(400, "The hf_llava test Hub server does not support create_pr")
        files = self._repo(type, repo, write=True).resolve(rev)["files"]
        patterns = _lfs_patterns(self.server.hub.store, files)
        answer = []
        for item in self._json_body().get("files", []):
            path = _check_repo_path(item["path"])
            lfs = (
                item["size"] >= self.server.hub.lfs_threshold
                or any(_matches(path, pattern) for pattern in patterns)
                or b"\0" in base64.b64decode(item.get("sample", ""))  # binary content belongs in LFS
            )
            existing = files.get(path)
            oid = None if existing is None else (existing["sha256"] if existing["lfs"] else existing["oid"])
            answer.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._json({"files": answer})

    def commit(self, type: str, repo: str, rev: str) -> None:
        if self.query.get("create_pr"):
            raise HubError(400, "The hf_llava test Hub server does not support create_pr")
        self._repo(type, repo, write=True)
        try:
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise HubError(400, f"Commit payload is not ndjson: {err}") from None
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "Commit payload must start with a header line")
        header, operations = lines[0]["value"], lines[1:]
        store = self.server.hub.store
        with store.lock:
            found = store.repo(type, repo)
            if rev not in found.meta["branches"]:
                raise HubError(404, f"Branch {rev!r} not found (commits go to branches)", "RevisionNotFound")
            parent = found.resolve(rev)
            if header.get("parentCommit") not in (None, parent["id"]):
                raise HubError(412, f"parentCommit {header['parentCommit']} is not the head of {rev} ({parent['id']})")
            files = dict(parent["files"])
            for operation in operations:
                self._apply(operation, files)
            title, message = header.get("summary") or "", header.get("description") or ""
            commit = found.write_commit(rev, parent, title, message, files)
        self._json({"success": True, "commitOid": commit["id"], "pullRequestUrl": None, "hookOutput": "",
                    "commitUrl": f"{self.server.hub.url}/{found.url_path}/commit/{commit['id']}"})

    def _apply(self, operation: dict, files: dict) -> None:
        key, value = operation.get("key"), operation.get("value", {})
        path = _check_repo_path(value.get("path", "").strip("/") if key == "deletedFolder" else value.get("path", ""))
        store = self.server.hub.store
        if key == "file":
            if value.get("encoding", "base64") != "base64":
                raise HubError(400, f"Unsupported encoding {value['encoding']!r} for {path}")
            files[path] = store.entry(base64.b64decode(value["content"]), lfs=False)
        elif key == "lfsFile":
            if not SHA256_RE.fullmatch(value.get("oid", "")):
                raise HubError(400, f"LFS oid of {path} is not a sha256: {value.get('oid')!r}")
            object_path = store.object_path(value["oid"])
            if not object_path.exists():
                raise HubError(400, f"LFS object {value['oid']} for {path} was never uploaded")
            files[path] = store.lfs_entry(value["oid"], object_path.stat().st_size)
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            inside = [p for p in files if p.startswith(path + "/")]
            if not inside:
                raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for p in inside:
                del files[p]
        else:
            raise HubError(400, f"Unsupported commit operation {key!r}")

    # ---- git-LFS batch API and the upload targets it hands out --------------------------------------------------
    def lfs_batch(self, type: str, repo: str) -> None:
        self._repo(type, repo, write=True)
        payload = self._json_body()
        if payload.get("operation") != "upload":
            raise HubError(400, "Only the LFS 'upload' operation is supported (downloads go through /resolve)")
        hub, chunk = self.server.hub, self.server.hub.multipart_chunk_size
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], obj["size"]
            if not SHA256_RE.fullmatch(oid):
                objects.append({"oid": oid, "size": size, "error": {"code": 422, "message": "oid is not a sha256"}})
                continue
            answer = {"oid": oid, "size": size, "authenticated": True}
            if not hub.store.object_path(oid).exists():
                hub.pending_uploads[oid] = size
                base = f"{hub.url}/lfs/{oid}"
                if chunk and size > chunk:
                    parts = {str(n): f"{base}/part/{n}" for n in range(1, -(-size // chunk) + 1)}
                    upload = {"href": f"{base}/complete", "header": {"chunk_size": str(chunk), **parts}}
                else:
                    upload = {"href": base}
                answer["actions"] = {"upload": upload, "verify": {"href": f"{base}/verify"}}
            objects.append(answer)
        self._send(200, json.dumps({"transfer": "multipart" if chunk else "basic", "objects": objects}).encode(),
                   "application/vnd.git-lfs+json")

    def _expected_size(self, oid: str) -> int:
        size = self.server.hub.pending_uploads.get(oid)
        if size is None:
            raise HubError(403, f"LFS object {oid} was not announced through the batch API")
        return size

    def _store_lfs(self, oid: str, data: bytes) -> None:
        if len(data) != self._expected_size(oid) or hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, f"Uploaded bytes do not match LFS object {oid} (size or sha256 differ)")
        self.server.hub.store.put_object(data)
        self.server.hub.pending_uploads.pop(oid, None)

    def lfs_put(self, oid: str, part: str | None = None) -> None:
        if part is None:
            self._store_lfs(oid, self.body)
            self._json({})
            return
        self._expected_size(oid)
        part_dir = self.server.hub.store.root / "uploads" / oid
        part_dir.mkdir(exist_ok=True)
        (part_dir / part).write_bytes(self.body)
        self._send(200, b"", "text/plain", {"ETag": f'"{hashlib.md5(self.body).hexdigest()}"'})

    def lfs_complete(self, oid: str) -> None:
        part_dir = self.server.hub.store.root / "uploads" / oid
        data = []
        for part in sorted(self._json_body().get("parts", []), key=lambda p: p["partNumber"]):
            chunk_path = part_dir / str(int(part["partNumber"]))
            chunk = chunk_path.read_bytes() if chunk_path.exists() else b""
            if part["etag"].strip('"') != hashlib.md5(chunk).hexdigest():
                raise HubError(400, f"Part {part['partNumber']} of LFS object {oid} is missing or has a wrong etag")
            data.append(chunk)
        self._store_lfs(oid, b"".join(data))
        shutil.rmtree(part_dir, ignore_errors=True)
        self._json({})

    def lfs_verify(self, oid: str) -> None:
        self._require_token()
        path = self.server.hub.store.object_path(oid)
        if not path.exists() or path.stat().st_size != self._json_body().get("size"):
            raise HubError(404, f"LFS object {oid} is not stored (or has another size)")
        self._json({})

    # ---- collections (hub/collection.py): a JSON file per collection under root/collections ---------------------
    def _collection_path(self, slug: str) -> Path:
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", slug):
            raise HubError(400, f"Invalid collection slug {slug!r}")
        return self.server.hub.store.root / "collections" / f"{slug.replace('/', '--')}.json"

    def _collection(self, slug: str) -> dict:
        path = self._collection_path(slug)
        if not path.exists():
            raise HubError(404, f"Collection {slug} not found")
        collection = json.loads(path.read_text())
        if collection["private"] and not self._authenticated():
            raise HubError(404, f"Collection {slug} not found")
        return collection

    def _save_collection(self, collection: dict) -> None:
        collection["lastUpdated"] = _now()
        path = self._collection_path(collection["slug"])
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(collection))

    def create_collection(self) -> None:
        self._require_token()
        payload = self._json_body()
        namespace, title = payload.get("namespace") or self.server.hub.store.user, payload.get("title") or ""
        if not title:
            raise HubError(400, "A collection needs a title")
        words = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        slug = f"{namespace}/{words}-{hashlib.sha1(f'{namespace}/{title}'.encode()).hexdigest()[:24]}"
        with self.server.hub.store.lock:
            if self._collection_path(slug).exists():
                raise HubError(409, "You already have a collection with this title", slug=slug)
            collection = {"slug": slug, "title": title, "description": payload.get("description"),
                          "owner": {"name": namespace, "type": "user"}, "items": [], "position": 0,
                          "private": bool(payload.get("private")), "theme": "indigo", "upvotes": 0}
            self._save_collection(collection)
        self._json(collection)

    def get_collection(self, slug: str) -> None:
        self._json(self._collection(slug))

    def add_collection_item(self, slug: str) -> None:
        self._require_token()
        payload = self._json_body()
        item = payload.get("item") or {}
        kind, item_id = item.get("type"), item.get("id")
        if kind not in ("model", "dataset", "space"):
            raise HubError(400, f"Unsupported collection item type {kind!r}")
        self.server.hub.store.repo(kind, item_id)  # 404 for a repo that does not exist, as on the Hub
        with self.server.hub.store.lock:
            collection = self._collection(slug)
            if any(i["type"] == kind and i["id"] == item_id for i in collection["items"]):
                raise HubError(409, f"{kind} {item_id} is already in collection {slug}")
            note = payload.get("note")
            collection["items"].append({"_id": hashlib.sha1(f"{slug}/{kind}/{item_id}".encode()).hexdigest()[:24],
                                        "id": item_id, "type": kind, "position": len(collection["items"]),
                                        **({"note": {"text": note, "html": note}} if note else {})})
            self._save_collection(collection)
        self._json(collection)

    # ---- downloads ------------------------------------------------------------------------------------------
    def resolve(self, type: str, repo: str, rev: str, path: str) -> None:
        found = self._repo(type, repo)
        commit = found.resolve(rev)
        entry = commit["files"].get(path)
        headers = {"X-Repo-Commit": commit["id"], "Accept-Ranges": "bytes"}
        if entry is None:
            raise HubError(404, f"Entry {path!r} not found at {rev}", "EntryNotFound", headers)
        headers["ETag"] = f'"{entry["oid"]}"'
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{entry["sha256"]}"', "X-Linked-Size": str(entry["size"])})
        data = self.server.hub.store.read(entry)
        status, ranged = self._range(len(data))
        if ranged is not None:
            start, end = ranged
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data = data[start:end + 1]
        self._send(status, data, "application/octet-stream", headers)

    def _range(self, size: int) -> tuple[int, tuple[int, int] | None]:
        """(status, (first, last) byte) for the request's Range header; only single ranges, as clients send."""
        header = self.headers.get("Range")
        if not header:
            return 200, None
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
        if not match or match.groups() == ("", ""):
            raise HubError(400, f"Unsupported Range header {header!r}")
        first, last = match.groups()
        if first == "":  # suffix range: the last N bytes
            start, end = max(size - int(last), 0), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        if start >= size or start > end:
            raise HubError(416, f"Range {header!r} not satisfiable for {size} bytes",
                           headers={"Content-Range": f"bytes */{size}"})
        return 206, (start, end)


_REPO = r"(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
_GIT_REPO = r"(?:(?P<type>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)"  # models have no prefix in git/resolve URLs
_LFS = r"/lfs/(?P<oid>[0-9a-f]{64})"
_ROUTES = [
    (method, re.compile(pattern), name)
    for method, pattern, name in [
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("DELETE", r"/api/repos/delete", "delete_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", rf"/api/{_REPO}(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
        ("GET", rf"/api/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
        ("POST", rf"/api/{_REPO}/paths-info/(?P<rev>[^/]+)", "paths_info"),
        ("GET", rf"/api/{_REPO}/refs", "refs"),
        ("GET", rf"/api/{_REPO}/commits/(?P<rev>[^/]+)", "commits"),
        ("POST", rf"/api/{_REPO}/branch/(?P<branch>[^/]+)", "create_branch"),
        ("DELETE", rf"/api/{_REPO}/branch/(?P<branch>[^/]+)", "delete_branch"),
        ("POST", rf"/api/{_REPO}/tag/(?P<rev>[^/]+)", "create_tag"),
        ("DELETE", rf"/api/{_REPO}/tag/(?P<tag>[^/]+)", "delete_tag"),
        ("POST", rf"/api/{_REPO}/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", rf"/api/{_REPO}/commit/(?P<rev>[^/]+)", "commit"),
        ("POST", rf"/{_GIT_REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", rf"{_LFS}(?:/part/(?P<part>\d+))?", "lfs_put"),
        ("POST", rf"{_LFS}/complete", "lfs_complete"),
        ("POST", rf"{_LFS}/verify", "lfs_verify"),
        ("GET|HEAD", rf"/{_GIT_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        ("POST", r"/api/collections", "create_collection"),
        ("GET", r"/api/collections/(?P<slug>[^/]+/[^/]+)", "get_collection"),
        ("POST", r"/api/collections/(?P<slug>[^/]+/[^/]+)/items", "add_collection_item"),
    ]
]


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # keep-alive connections must not hold up stop()
    allow_reuse_address = True
    hub: "HubServer"


class HubServer:
    """A Hub on http://127.0.0.1:`port` storing its repos under `root` (see the module docstring).

    Use as a context manager or with start()/stop(). Attributes for tests: `url`, `token`, `user`,
    `requests` [(method, path)], `unknown_routes` [(method, path)] and `errors` (tracebacks of server crashes).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        port: int = 0,
        token: str = "hf_test_token",
        user: str = "test-user",
        lfs_threshold: int = 10 * 2**20,
        multipart_chunk_size: int | None = None,
        max_request_bytes: int = 256 * 2**20,
    ):
        self.token, self.user = token, user
        self.lfs_threshold, self.multipart_chunk_size = lfs_threshold, multipart_chunk_size
        self.max_request_bytes = max_request_bytes
        self.store = _Store(Path(root), user)
        self.requests: list[tuple[str, str]] = []
        self.unknown_routes: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.pending_uploads: dict[str, int] = {}  # LFS oid -> size announced through the batch API
        self._httpd = _HTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.hub = self
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> "HubServer":
        # a short poll interval makes stop() quick
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hf-llava-test-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the hf_llava loopback Hub test server on 127.0.0.1.")
    parser.add_argument("--root", required=True, help="directory holding the repos (created if missing)")
    parser.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    parser.add_argument("--token", default="hf_test_token", help="the one token the server accepts")
    parser.add_argument("--user", default="test-user", help="user name that whoami returns")
    parser.add_argument("--lfs-threshold", type=int, default=10 * 2**20, help="bytes from which files go to LFS")
    parser.add_argument("--multipart-chunk-size", type=int, default=None, help="hand out multipart LFS uploads")
    parser.add_argument("--max-request-bytes", type=int, default=256 * 2**20, help="request body size limit")
    args = parser.parse_args(argv)
    server = HubServer(args.root, port=args.port, token=args.token, user=args.user, lfs_threshold=args.lfs_threshold,
                       multipart_chunk_size=args.multipart_chunk_size, max_request_bytes=args.max_request_bytes)
    print(f"Hub test server on {server.url} (root {args.root}); set HF_ENDPOINT={server.url} HF_HUB_DISABLE_XET=1 "
          f"HF_TOKEN={server.token}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
