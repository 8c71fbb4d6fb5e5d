"""Mode `jwt` (RADIOLOGY_AUTH=jwt): the caller is the verified subject of `Authorization: Bearer <JWT>`.

One key source, chosen by configuration: an HMAC secret (HS256), a PEM public key (RS256, ES256,
...) or an identity provider's JWKS URL (keys picked by the token's `kid`, fetched in a thread and
cached; an unknown `kid` refetches, at most once per RADIOLOGY_JWT_JWKS_MIN_REFETCH_SECONDS, so a
flood of made-up kids cannot flood the provider). The accepted algorithms are fixed by configuration
and by the key itself, never by the token. Every failure is a 401 with a `WWW-Authenticate: Bearer`
challenge (RFC 6750) and a clear detail; a provider that cannot be reached is a 503.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from starlette.requests import Request

from services.common.config import Settings
from services.common.identity import USER_ID_RULE, is_valid_user_id
from services.gateway.errors import INVALID_TOKEN, MISSING_IDENTITY, SERVICE_UNAVAILABLE, ApiError

log = logging.getLogger(__name__)

REALM = "radiology"
MAX_TOKEN_CHARS = 16 * 1024
MAX_JWKS_BYTES = 1024 * 1024
JWKS_TIMEOUT_SECONDS = 5.0
MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
JWKS_DEFAULT_ALGORITHMS = ("RS256", "ES256")
ASYMMETRIC_ALGORITHMS = (*RSA_ALGORITHMS, *EC_ALGORITHMS.values(), "EdDSA")
_ALG_TEXT = re.compile(r"[A-Za-z0-9]{1,16}")


class AuthConfigError(Exception):
    """jwt mode is configured in a way that cannot work; the gateway does not start."""


# --- the 401 answers -------------------------------------------------------------------------------

def missing_token() -> ApiError:
    """No credentials at all (RFC 6750 3.1: the challenge carries no error code)."""
    return ApiError(
        MISSING_IDENTITY,
        "Send an access token in the Authorization header: 'Authorization: Bearer <token>'.",
        {"WWW-Authenticate": f'Bearer realm="{REALM}"'},
    )


def invalid_token(detail: str) -> ApiError:
    description = detail.replace("\\", "").replace('"', "'")
    return ApiError(
        INVALID_TOKEN,
        detail,
        {"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token", '
                             f'error_description="{description}"'},
    )


def _provider_unavailable() -> ApiError:
    return ApiError(
        SERVICE_UNAVAILABLE,
        "The identity provider's signing keys cannot be fetched right now; please retry shortly.",
        {"Retry-After": "5"},
    )


# --- key sources -----------------------------------------------------------------------------------

class KeySource(Protocol):
    algorithms: tuple[str, ...]

    async def key_for(self, header: dict[str, Any]) -> Any:
        """The key that must have signed a token with this (unverified) header."""


@dataclass
class StaticKey:
    key: Any  # the HMAC secret as bytes, or a public key object
    algorithms: tuple[str, ...]

    async def key_for(self, header: dict[str, Any]) -> Any:
        return self.key


class JwksKeys:
    """An identity provider's published keys, by `kid`, refreshed every `cache_seconds`; an unknown
    kid refetches (key rotation), never more often than every `min_refetch_seconds`. While the
    provider is unreachable the keys already known keep working."""

    def __init__(self, url: str, algorithms: tuple[str, ...], *, cache_seconds: float,
                 min_refetch_seconds: float, timeout: float = JWKS_TIMEOUT_SECONDS) -> None:
        self.url = url
        self.algorithms = algorithms
        self.cache_seconds = cache_seconds
        self.min_refetch_seconds = min_refetch_seconds
        self.timeout = timeout
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._attempted_at = -math.inf  # monotonic time of the last fetch attempt
        self._loaded_at = -math.inf  # ... and of the last successful one
        self._lock = asyncio.Lock()
        self.fetches = 0  # for tests and logs

    async def key_for(self, header: dict[str, Any]) -> jwt.PyJWK:
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise invalid_token("The token's 'kid' header is not a string.")
        if time.monotonic() - self._loaded_at >= self.cache_seconds:
            await self._refresh()
        key = self._find(kid)
        if key is None:
            await self._refresh()  # maybe rotated: a new key the cache does not know yet
            key = self._find(kid)
        if key is None:
            if not self._keys:
                raise _provider_unavailable()
            raise invalid_token("The token is signed with a key this service does not know.")
        return key

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:  # a provider with one key may leave kid out
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        attempted = self._attempted_at
        async with self._lock:
            if self._attempted_at != attempted:
                return  # another request fetched while this one waited
            if time.monotonic() - self._attempted_at < self.min_refetch_seconds:
                return
            self._attempted_at = time.monotonic()
            self.fetches += 1
            try:
                keys = await asyncio.to_thread(self._fetch)
            except Exception as exc:  # unreachable, not JSON, ...: keep what we have
                log.warning("could not fetch the JWKS from %s: %s", self.url, exc)
                return
            self._keys = keys
            self._loaded_at = time.monotonic()
            log.info("loaded %d signing keys from %s", len(keys), self.url)

    def _fetch(self) -> dict[str | None, jwt.PyJWK]:
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout) as resp:  # noqa: S310 - http(s) checked at start
            body = resp.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError("the JWKS document is larger than 1 MiB")
        document = json.loads(body)
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ValueError("the JWKS document has no 'keys' list")
        keys: dict[str | None, jwt.PyJWK] = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue  # e.g. the provider's encryption key
            try:
                key = jwt.PyJWK(entry)
            except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
                log.info("ignoring JWKS key %r: %s", entry.get("kid"), exc)
                continue
            if key.algorithm_name in self.algorithms:
                keys[entry.get("kid")] = key
        return keys


# --- the verifier ----------------------------------------------------------------------------------

_FAILURES: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "The token has expired."),
    (jwt.ImmatureSignatureError, "The token is not valid yet (its nbf or iat is in the future)."),
    (jwt.InvalidAudienceError, "The token is not meant for this service (wrong audience)."),
    (jwt.InvalidIssuerError, "The token was issued by another issuer."),
    (jwt.InvalidAlgorithmError, "The token's signing algorithm is not accepted."),
    (jwt.InvalidSignatureError, "The token's signature is not valid."),
    (jwt.InvalidKeyError, "The token's signature is not valid."),
    (jwt.DecodeError, "The token is not a well-formed JWT."),
)


class JwtVerifier:
    def __init__(self, source: KeySource, *, audience: str = "", issuer: str = "",
                 user_claim: str = "sub", leeway: float = 30.0) -> None:
        self.source = source
        self.audience = audience
        self.issuer = issuer
        self.user_claim = user_claim
        self.leeway = leeway

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtVerifier:
        return cls(
            _key_source(settings),
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            user_claim=settings.jwt_user_claim,
            leeway=settings.jwt_leeway_seconds,
        )

    async def user(self, request: Request) -> str | None:
        """The caller's user id, None when the request carries no Bearer token; ApiError (401) for
        a token that does not verify."""
        values = request.headers.getlist("authorization")
        if not values:
            return None
        if len(values) > 1:
            raise invalid_token("Send the Authorization header once.")
        scheme, _, token = values[0].strip().partition(" ")
        if scheme.lower() != "bearer":
            return None  # another scheme: no bearer token was offered
        return await self.verify(token.strip())

    async def verify(self, token: str) -> str:
        if not token:
            raise invalid_token("The Bearer token is empty.")
        if len(token) > MAX_TOKEN_CHARS:
            raise invalid_token("The token is too long.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise invalid_token("The token is not a well-formed JWT.") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.source.algorithms:
            shown = f"'{alg}'" if isinstance(alg, str) and _ALG_TEXT.fullmatch(alg) else "its"
            raise invalid_token(
                f"Tokens signed with {shown} algorithm are not accepted "
                f"(accepted: {', '.join(self.source.algorithms)})."
            )
        key = await self.source.key_for(header)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(self.source.algorithms),
                audience=self.audience or None,
                issuer=self.issuer or None,
                leeway=self.leeway,
                options={
                    "require": ["exp", self.user_claim],
                    "verify_aud": bool(self.audience),
                    "verify_exp": True,
                    "verify_nbf": True,
                    "verify_iat": True,
                },
            )
        except jwt.MissingRequiredClaimError as exc:
            raise invalid_token(f"The token has no '{exc.claim}' claim.") from None
        except jwt.PyJWTError as exc:
            for kind, detail in _FAILURES:
                if isinstance(exc, kind):
                    raise invalid_token(detail) from None
            raise invalid_token("The token is not valid.") from None
        user = claims.get(self.user_claim)
        if not isinstance(user, str) or not is_valid_user_id(user):
            raise invalid_token(
                f"The token's '{self.user_claim}' claim is not a valid user id ({USER_ID_RULE})."
            )
        return user


# --- configuration ---------------------------------------------------------------------------------

def _key_source(settings: Settings) -> KeySource:
    sources = {
        "RADIOLOGY_JWT_SECRET": settings.jwt_secret,
        "RADIOLOGY_JWT_PUBLIC_KEY": settings.jwt_public_key,
        "RADIOLOGY_JWT_JWKS_URL": settings.jwt_jwks_url,
    }
    chosen = [name for name, value in sources.items() if value]
    if not chosen:
        raise AuthConfigError(
            "RADIOLOGY_AUTH=jwt needs a key to verify tokens with: set one of RADIOLOGY_JWT_SECRET "
            "(HS256), RADIOLOGY_JWT_PUBLIC_KEY (path of a PEM public key) or RADIOLOGY_JWT_JWKS_URL "
            "(an identity provider's JWKS)."
        )
    if len(chosen) > 1:
        raise AuthConfigError(
            f"RADIOLOGY_AUTH=jwt takes one key source; {' and '.join(chosen)} are both set."
        )
    if not settings.jwt_user_claim:
        raise AuthConfigError("RADIOLOGY_JWT_USER_CLAIM is empty; it names the claim that holds the user id.")
    configured = tuple(settings.jwt_algorithms)
    if any(a.lower() == "none" for a in configured):
        raise AuthConfigError(
            "RADIOLOGY_JWT_ALGORITHMS must not include 'none': unsigned tokens are never accepted."
        )

    if settings.jwt_secret:
        secret = settings.jwt_secret.encode()
        if len(secret) < MIN_SECRET_BYTES:
            raise AuthConfigError(f"RADIOLOGY_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes long.")
        return StaticKey(secret, _algorithms(configured, ("HS256",), HMAC_ALGORITHMS, "an HMAC secret"))

    if settings.jwt_public_key:
        key = _load_public_key(Path(settings.jwt_public_key))
        if isinstance(key, rsa.RSAPublicKey):
            fits: tuple[str, ...] = RSA_ALGORITHMS
        elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in EC_ALGORITHMS:
            fits = (EC_ALGORITHMS[key.curve.name],)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            fits = ("EdDSA",)
        else:
            raise AuthConfigError(f"RADIOLOGY_JWT_PUBLIC_KEY: unsupported key type {type(key).__name__}.")
        return StaticKey(key, _algorithms(configured, fits[:1], fits, "this public key"))

    url = settings.jwt_jwks_url
    if not url.startswith(("https://", "http://")):
        raise AuthConfigError(f"RADIOLOGY_JWT_JWKS_URL must be an http(s) URL, not {url!r}.")
    if url.startswith("http://"):
        log.warning("RADIOLOGY_JWT_JWKS_URL is plain http: use https outside a trusted network")
    return JwksKeys(
        url,
        _algorithms(configured, JWKS_DEFAULT_ALGORITHMS, ASYMMETRIC_ALGORITHMS, "a JWKS"),
        cache_seconds=settings.jwt_jwks_cache_seconds,
        min_refetch_seconds=settings.jwt_jwks_min_refetch_seconds,
    )


def _algorithms(configured: tuple[str, ...], default: tuple[str, ...], fits: tuple[str, ...],
                source: str) -> tuple[str, ...]:
    chosen = configured or default
    wrong = [a for a in chosen if a not in fits]
    if wrong:
        raise AuthConfigError(
            f"RADIOLOGY_JWT_ALGORITHMS: {', '.join(wrong)} cannot be used with {source} "
            f"(possible: {', '.join(fits)})."
        )
    return chosen


def _load_public_key(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuthConfigError(f"RADIOLOGY_JWT_PUBLIC_KEY: cannot read {path}: {exc.strerror}.") from None
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificate(data).public_key()
        return serialization.load_pem_public_key(data)
    except ValueError:
        raise AuthConfigError(
            f"RADIOLOGY_JWT_PUBLIC_KEY: {path} is not a PEM public key or certificate."
        ) from None
