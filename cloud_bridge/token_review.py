"""Bearer tokens on the bridge's kubelet API, checked by the apiserver as a kubelet's webhook mode does.

``--authentication-token-webhook``: a TokenReview says who the token belongs
to, a SubjectAccessReview whether that user may ``<verb> nodes/<subresource>``
of the node asked about (attributes from ``kubelet/auth.py``). Answers are
cached like the kubelet's defaults (authentication 2 min; allowed 5 min,
denied 30 s) so a scraper every 15 s costs the apiserver nothing. An
apiserver that cannot be asked means 401/403 now, retried on the next request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .kubelet.auth import RequestAttributes
from .kubelet.errors import Forbidden, Unauthorized

log = logging.getLogger("cloud_bridge.token_review")

AUTHN_TTL = 120.0
ALLOWED_TTL = 300.0
DENIED_TTL = 30.0
MAX_CACHE = 4096


@dataclass(frozen=True, slots=True)
class User:
    name: str
    uid: str
    groups: tuple[str, ...]
    extra: tuple[tuple[str, tuple[str, ...]], ...]


class TokenReviewAuthorizer:
    def __init__(self, api_client: Any, *, clock: Callable[[], float] = time.monotonic) -> None:
        from kubernetes import client

        self._authn: Any = client.AuthenticationV1Api(api_client)
        self._authz: Any = client.AuthorizationV1Api(api_client)
        self._clock = clock
        self._users: dict[str, tuple[float, User | None]] = {}
        self._decisions: dict[tuple[User, RequestAttributes], tuple[float, bool, str]] = {}
        self.reviews = 0
        """TokenReviews and SubjectAccessReviews sent (the caches keep this low)."""

    async def authorize(self, token: str, attributes: RequestAttributes) -> str:
        user = await self._user(token)
        if user is None:
            raise Unauthorized("Unauthorized: the bearer token was not accepted")
        allowed, reason = await self._decision(user, attributes)
        if not allowed:
            # The kubelet's wording, so users recognise it.
            raise Forbidden(
                f"Forbidden (user={user.name}, verb={attributes.verb}, resource=nodes, "
                f"subresource(s)=[{attributes.subresource}]){': ' + reason if reason else ''}"
            )
        return user.name

    async def _user(self, token: str) -> User | None:
        now = self._clock()
        token_key = hashlib.sha256(token.encode()).hexdigest()  # not the token itself in memory
        cached = self._users.get(token_key)
        if cached is not None and cached[0] > now:
            return cached[1]
        user: User | None = None
        try:
            user = await asyncio.to_thread(self._review_token, token)
        except Exception as exc:  # the apiserver is unreachable: deny now, ask again next time
            log.warning("TokenReview failed: %s", exc)
            return None
        _put(self._users, token_key, (now + AUTHN_TTL, user))
        return user

    async def _decision(self, user: User, attributes: RequestAttributes) -> tuple[bool, str]:
        now = self._clock()
        key = (user, attributes)
        cached = self._decisions.get(key)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        try:
            allowed, reason = await asyncio.to_thread(self._review_access, user, attributes)
        except Exception as exc:
            log.warning("SubjectAccessReview failed: %s", exc)
            return False, "the apiserver could not be asked"
        _put(self._decisions, key, (now + (ALLOWED_TTL if allowed else DENIED_TTL), allowed, reason))
        return allowed, reason

    # ------------------------------------------------------------------ blocking calls

    def _review_token(self, token: str) -> User | None:
        self.reviews += 1
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        status = self._authn.create_token_review(body).status
        if not status or not status.authenticated or not status.user:
            return None
        u = status.user
        extra = tuple(sorted((k, tuple(v or ())) for k, v in (u.extra or {}).items()))
        return User(u.username or "", u.uid or "", tuple(u.groups or ()), extra)

    def _review_access(self, user: User, a: RequestAttributes) -> tuple[bool, str]:
        self.reviews += 1
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user.name,
                "uid": user.uid,
                "groups": list(user.groups),
                "extra": {k: list(v) for k, v in user.extra},
                "resourceAttributes": {
                    "verb": a.verb,
                    "version": "v1",
                    "resource": "nodes",
                    "subresource": a.subresource,
                    "name": a.node,
                },
            },
        }
        status = self._authz.create_subject_access_review(body).status
        return bool(status and status.allowed), (status.reason or "") if status else ""


def _put(cache: dict[Any, Any], key: Any, value: Any) -> None:
    """Insert, dropping the oldest entries beyond ``MAX_CACHE`` (tokens are unbounded input)."""
    cache[key] = value
    while len(cache) > MAX_CACHE:
        cache.pop(next(iter(cache)))
