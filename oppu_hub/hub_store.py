"""Adapters on the Hugging Face Hub (or any Hub-API endpoint) through ``huggingface_hub.HfApi``: one private model
repo per user and task, ``{namespace}/oppu-{task}-{user}`` (the user named by a salted hash of their id unless raw
ids are asked for); each push is one commit holding the PEFT files, ``oppu.json`` and the model card, and never
goes into a public repo unless asked to. Hub failures become the store's errors, naming the step that failed."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx2
from huggingface_hub import CommitOperationAdd, HfApi, constants, get_session, get_token, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name

from .adapters import verify_adapter
from .io import atomic_dir, owner_only, private_dir
from .store_base import (
    AdapterRef,
    AdapterRepoNotFoundError,
    AdapterStore,
    PushResult,
    StoreAuthError,
    StoreConnectionError,
    StoreError,
    StoreNamespaceError,
    StoreUploadError,
    check_served,
    ref_from_tags,
)

logger = logging.getLogger(__name__)

TIMEOUT_ENV = "OPPU_HUB_TIMEOUT"
DEFAULT_TIMEOUT = 60.0


def _request_url(error: BaseException) -> str:
    """The URL of the HTTP request behind ``error`` (an httpx or huggingface_hub error, or one they caused)."""
    for e in (error, error.__cause__, error.__context__):
        response = getattr(e, "response", None)
        with contextlib.suppress(AttributeError, RuntimeError):  # httpx raises RuntimeError when no request is set
            return str((response if response is not None else e).request.url)
    return ""


_STEPS = (("/preupload/", "preupload"), ("/commit/", "commit"), ("/api/repos/create", "create repo"),
          ("/settings", "make private"), ("/api/repos/delete", "delete repo"), ("/api/whoami", "whoami"),
          ("/api/validate-yaml", "validate card"), ("/resolve/", "download"), ("/tree/", "list files"),
          ("/commits/", "history"), ("/api/models", "repo info"))


def _one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (huggingface_hub's span several)."""
    return " ".join(str(error).split())


def _step(error: BaseException) -> str:
    """Which Hub call failed (``preupload``, ``commit``...), from the URL of the failed request."""
    url = _request_url(error)
    return next((step for fragment, step in _STEPS if fragment in url), "request")


class HubStore(AdapterStore):
    """Adapters on the Hugging Face Hub (or any Hub-API endpoint). Users are named by a salted hash of their id
    unless ``hash_user_ids=False`` (or ``$OPPU_HUB_HASH_USER_IDS=0``).

    Args:
        namespace: the user or organisation to push to and list (default: the token's user).
        endpoint: the Hub URL (default ``$HF_ENDPOINT``, else https://huggingface.co).
        token: an access token (default: ``$HF_TOKEN`` or the one saved by ``hf auth login``).
        timeout: seconds a Hub request may stall before it fails (default ``$OPPU_HUB_TIMEOUT``, else 60);
            ``huggingface_hub``'s shared client has none, so a stalled Hub would hang a push forever. It is set
            on that shared client, so it holds for the whole process.
    """

    kind = "hub"
    hash_by_default = True

    def __init__(self, namespace: str | None = None, *, endpoint: str | None = None, token: str | None = None,
                 hash_user_ids: bool | None = None, salt: str | None = None, private: bool = True,
                 timeout: float | None = None):
        super().__init__(namespace, hash_user_ids=hash_user_ids, salt=salt, private=private)
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
        self.token = token
        self.timeout = float(timeout or os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT)
        self.api = HfApi(endpoint=self.endpoint, token=token)

    def describe(self) -> str:
        return f"hub:{self._namespace or '<token user>'} at {self.endpoint}"

    @property
    def namespace(self) -> str:
        if self._namespace is None:
            self._namespace = self.whoami()["name"]
        return self._namespace

    def _token(self) -> str:
        token = self.token or get_token()
        if not token:
            raise StoreAuthError(f"no Hugging Face token for {self.endpoint}: run `hf auth login` or set HF_TOKEN")
        return token

    def whoami(self) -> dict[str, Any]:
        """The token's account (``name``, ``orgs``...)."""
        token = self._token()
        with self._errors("whoami"):
            return self.api.whoami(token=token)

    def _check_namespace(self) -> None:
        """Raise :class:`StoreNamespaceError` unless the namespace (default: the token's user) is the token's user
        or one of its organisations: elsewhere it may write nothing, and the Hub hides private repos from it."""
        me = self.whoami()
        if self._namespace is None:
            self._namespace = me["name"]
        writable = {me.get("name"), *(o.get("name") for o in me.get("orgs") or [])}
        if self._namespace not in writable:
            raise StoreNamespaceError(
                f"namespace {self._namespace!r} belongs to someone else: the token of {me.get('name')!r} may not "
                f"write there nor see its private repos (it may write to "
                f"{', '.join(sorted(n for n in writable if n))})")

    @contextlib.contextmanager
    def _errors(self, action: str, repo_id: str | None = None, *, upload: bool = False) -> Iterator[None]:
        """Run Hub calls with :attr:`timeout` and translate huggingface_hub/httpx failures into the store's errors,
        naming the repo and the step (``preupload``, ``commit``...) that failed."""
        get_session().timeout = httpx2.Timeout(self.timeout)
        what = f"{action} {repo_id}" if repo_id else action
        retry = "; the local adapter folder is untouched: run the push again to retry" if upload else ""
        try:
            yield
        except RevisionNotFoundError as e:
            raise AdapterRepoNotFoundError(f"{what}: no such revision on {self.endpoint}") from e
        except RepositoryNotFoundError as e:
            raise AdapterRepoNotFoundError(
                f"{what}: repo not found on {self.endpoint}, or it is private and this token may not read it "
                f"(log in with the owner's token)") from e
        except HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else None
            step = _step(e)
            if status == 401:
                raise StoreAuthError(f"{what}: the token was rejected by {self.endpoint} at step '{step}' (HTTP "
                                     f"401); run `hf auth login` or set HF_TOKEN") from e
            if status == 403:
                raise StoreAuthError(f"{what}: permission denied by {self.endpoint} at step '{step}' (HTTP 403): "
                                     f"the token may not write there (read-only token, or the repo belongs to "
                                     f"someone else)") from e
            error = StoreUploadError if upload else StoreError
            raise error(f"{what} failed at step '{step}' (HTTP {status}){retry}: {_one_line(e)}") from e
        except (httpx2.TransportError, LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
            error = StoreUploadError if upload else StoreConnectionError
            raise error(f"{what} failed at step '{_step(e)}': no answer from {self.endpoint} "
                        f"({type(e).__name__}: {_one_line(e)}){retry}") from e

    def push(self, folder: str | Path, *, base_model: str | None = None, commit_message: str | None = None,
             private: bool | None = None, make_private: bool = False) -> PushResult:
        record = verify_adapter(folder)
        self.check_naming()
        token = self._token()
        self._check_namespace()
        repo_id = self.repo_id(record.user_id, record.task)
        files = self.repo_files(folder, record, repo_id, base_model)
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=content if isinstance(content, bytes)
                                         else str(content)) for name, content in files.items()]
        with self._errors("push to", repo_id, upload=True):
            want_private = self.private if private is None else private
            self.api.create_repo(repo_id, private=want_private, exist_ok=True, token=token)
            info = self.api.model_info(repo_id, token=token)  # an existing repo keeps its visibility: check it
            public = not info.private
            if self._keeps_private(repo_id, public, private, make_private) and public:
                self.api.update_repo_settings(repo_id, private=True, token=token)
                logger.info("made %s private", repo_id)
            commit = self.api.create_commit(repo_id, operations, commit_message=commit_message
                                            or self.commit_message(record), token=token)
        logger.info("pushed %s to %s@%s", folder, repo_id, commit.oid)
        return PushResult(repo_id=repo_id, revision=commit.oid, url=f"{self.endpoint}/{repo_id}",
                          new_revision=commit.oid != info.sha)

    def _list(self, tags: Sequence[str]) -> list[AdapterRef]:
        with self._errors("list", self._namespace):
            models = self.api.list_models(author=self.namespace, filter=list(tags),
                                          expand=["sha", "private", "tags", "lastModified"])
            refs = [ref_from_tags(m.id, m.tags, private=m.private, revision=m.sha,
                                   last_modified=m.last_modified.isoformat() if m.last_modified else None)
                    for m in models]
        return sorted(refs, key=lambda r: r.repo_id)

    def pull(self, repo_id: str, revision: str | None = None, *, local_dir: str | Path | None = None) -> Path:
        """Files come only once the Hub has said, in this call, that this store's token may read ``repo_id`` at
        ``revision`` (``model_info``; then that very commit is downloaded): a refused token or a Hub that does not
        answer gets an error, never a cached copy. Without ``local_dir`` the files go to the Hugging Face cache,
        where the repo's folder is owner-only."""
        def download(into: Path | None) -> Path:
            return Path(snapshot_download(repo_id, revision=info.sha, token=self.token, endpoint=self.endpoint,
                                          local_dir=into))

        with self._errors("pull", repo_id):
            info = self.api.model_info(repo_id, revision=revision, token=self.token)
            if local_dir is None:
                cache = private_dir(self._cache_dir(repo_id))  # owner-only before anything is downloaded into it
                folder = download(None)
                owner_only(cache)
                return check_served(folder, repo_id)
            local_dir = Path(local_dir)
            if not local_dir.exists():
                with atomic_dir(local_dir, mode=0o700) as tmp:
                    check_served(download(tmp), repo_id)
                return local_dir
            download(local_dir)
        for name in [*(s.rfilename for s in info.siblings or []), ".cache"]:
            if (local_dir / name).exists():
                owner_only(local_dir / name)
        return check_served(local_dir, repo_id)

    def history(self, repo_id: str) -> list[str]:
        with self._errors("history of", repo_id):
            return [c.commit_id for c in self.api.list_repo_commits(repo_id)]

    def delete(self, repo_id: str) -> None:
        """Delete the repo on the Hub (the owner's token); this machine's downloads of it are
        :meth:`cached_copies`."""
        token = self._token()
        with self._errors("delete", repo_id):
            self.api.delete_repo(repo_id, token=token, missing_ok=True)

    def user_repos(self, user_id: str) -> tuple[list[str], dict[str, str]]:
        repos, hidden = super().user_repos(user_id)
        try:
            self._check_namespace()
        except StoreNamespaceError as e:  # the Hub answers "not found" for the private repos it hides from the token
            hidden[f"the user's repos in {self.describe()}"] = str(e)
        return repos, hidden

    def _exists(self, repo_id: str) -> bool:
        with self._errors("check", repo_id):
            try:
                self.api.model_info(repo_id, token=self.token)
            except RepositoryNotFoundError:
                return False
            except HfHubHTTPError as e:
                status = e.response.status_code if e.response is not None else None
                if status in (401, 403):
                    raise StoreAuthError(f"it exists, but {self.endpoint} does not let this token see it "
                                         f"(HTTP {status}): delete it with the owner's token") from e
                raise
        return True

    @staticmethod
    def _cache_dir(repo_id: str) -> Path:
        """The repo's folder in the Hugging Face cache: ``models--{namespace}--{name}``."""
        return Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")

    def cached_copies(self, repo_ids: Sequence[str]) -> list[Path]:
        """The Hugging Face cache's folders of ``repo_ids`` on this machine (and their lock folders), by name."""
        folders = [self._cache_dir(repo_id) for repo_id in repo_ids]
        return [p for f in folders for p in (f, f.parent / ".locks" / f.name) if p.exists()]
