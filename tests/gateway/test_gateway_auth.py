"""Mode jwt (RADIOLOGY_AUTH=jwt): Bearer tokens verified with keys made here (HS256, RS256 and ES256
PEM files, a JWKS served over real HTTP with a key rotation); every bad token is a 401, never a 500;
header mode is unchanged."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.common.config import Settings
from services.gateway.app import create_app
from services.gateway.auth import AuthConfigError
from tests.gateway.fakes import Fakes
from tests.gateway.helpers import PNG, gateway_client, multipart

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-" + "x" * 40
AUDIENCE = "radiology-api"
ISSUER = "https://idp.example/realms/radiology"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {"sub": "alice", "exp": now + 300, "iat": now, "nbf": now,
                              "aud": AUDIENCE, "iss": ISSUER}
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def hs256(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unsigned(payload: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


def pem_public(key: Any, path: Path) -> Path:
    path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@asynccontextmanager
async def jwt_gateway(
    make_settings: Callable[..., Settings], **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(make_settings(auth="jwt", **settings)) as client:
        yield client


async def create_job(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    body, ctype = multipart([("files", "scan.png", PNG)])
    return await client.post("/jobs", content=body, headers={"Content-Type": ctype, **headers})


def assert_invalid(resp: httpx.Response, detail_part: str = "") -> None:
    assert resp.status_code == 401, resp.text
    body = resp.json()
    assert body["code"] == "invalid_token", body
    assert detail_part.lower() in body["detail"].lower(), body
    challenge = resp.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge, challenge


# --- HS256 -----------------------------------------------------------------------------------------

async def test_hs256_token_is_the_caller_and_x_user_id_is_ignored(
    make_settings: Callable[..., Settings], fakes: Fakes
) -> None:
    async with jwt_gateway(make_settings, jwt_secret=SECRET, jwt_audience=AUDIENCE, jwt_issuer=ISSUER) as c:
        resp = await create_job(c, {**bearer(hs256()), "X-User-ID": "mallory"})
        assert resp.status_code == 202, resp.text
        assert resp.json()["user_id"] == "alice"
        job_id = resp.json()["job_id"]
        assert (await c.get(f"/jobs/{job_id}", headers=bearer(hs256()))).status_code == 200
        # bob's token sees nothing of alice's, whatever X-User-ID says
        bob = bearer(hs256(sub="bob"))
        assert (await c.get(f"/jobs/{job_id}", headers={**bob, "X-User-ID": "alice"})).status_code == 404
        # X-User-ID alone is no identity in jwt mode
        resp = await c.get("/jobs", headers={"X-User-ID": "alice"})
        assert resp.status_code == 401 and resp.json()["code"] == "missing_identity"


async def test_missing_token_is_a_bare_bearer_challenge(make_settings: Callable[..., Settings]) -> None:
    async with jwt_gateway(make_settings, jwt_secret=SECRET) as c:
        for headers in ({}, {"Authorization": "Basic YWxpY2U6cHc="}):
            resp = await c.get("/jobs", headers=headers)
            assert resp.status_code == 401
            assert resp.json()["code"] == "missing_identity"
            assert "Authorization: Bearer" in resp.json()["detail"]
            assert resp.headers["www-authenticate"] == 'Bearer realm="radiology"'


BAD_HS256_TOKENS: list[tuple[str, Callable[[], str], str]] = [
    ("expired", lambda: hs256(exp=int(time.time()) - 120), "expired"),
    ("not yet valid", lambda: hs256(nbf=int(time.time()) + 600), "not valid yet"),
    ("issued in the future", lambda: hs256(iat=int(time.time()) + 600), "not valid yet"),
    ("no exp", lambda: hs256(exp=None), "'exp'"),
    ("no sub", lambda: hs256(sub=None), "'sub'"),
    ("sub breaks the user-id rule", lambda: hs256(sub="../etc"), "not a valid user id"),
    ("sub not a string", lambda: jwt.encode({**claims(), "sub": 42}, SECRET, algorithm="HS256"), ""),
    ("wrong audience", lambda: hs256(aud="another-api"), "audience"),
    ("no audience", lambda: hs256(aud=None), "'aud'"),
    ("wrong issuer", lambda: hs256(iss="https://evil.example"), "issuer"),
    ("wrong secret", lambda: jwt.encode(claims(), "other-" + "y" * 40, algorithm="HS256"), "signature"),
    ("HS512 not accepted", lambda: jwt.encode(claims(), SECRET, algorithm="HS512"), "HS512"),
    ("alg none", lambda: unsigned(claims()), "'none'"),
    ("tampered payload", lambda: _tampered(hs256()), "signature"),
    ("garbage", lambda: "garbage", "well-formed"),
    ("three garbage parts", lambda: "a.b.c", "well-formed"),
    ("empty", lambda: "", "empty"),
    ("huge", lambda: "a" * 20000, "too long"),
]


def _tampered(token: str) -> str:
    header, payload, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["sub"] = "bob"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{sig}"


@pytest.mark.parametrize(("case", "make", "detail"), BAD_HS256_TOKENS, ids=[c[0] for c in BAD_HS256_TOKENS])
async def test_bad_tokens_are_401_invalid_token(
    make_settings: Callable[..., Settings], fakes: Fakes, case: str, make: Callable[[], str], detail: str
) -> None:
    async with jwt_gateway(make_settings, jwt_secret=SECRET, jwt_audience=AUDIENCE, jwt_issuer=ISSUER) as c:
        token = make()
        for method, path in (("GET", "/jobs"), ("GET", f"/jobs/{uuid.uuid4()}"),
                             ("GET", f"/tasks/{uuid.uuid4()}"), ("POST", f"/jobs/{uuid.uuid4()}/cancel"),
                             ("DELETE", f"/jobs/{uuid.uuid4()}")):
            resp = await c.request(method, path, headers={"Authorization": f"Bearer {token}"})
            assert_invalid(resp, detail)
        assert_invalid(await create_job(c, bearer(token)), detail)
    assert not fakes.jobs.jobs and not fakes.storage.objects


async def test_leeway_accepts_a_just_expired_token(make_settings: Callable[..., Settings]) -> None:
    async with jwt_gateway(make_settings, jwt_secret=SECRET, jwt_leeway_seconds=60) as c:
        assert (await c.get("/jobs", headers=bearer(hs256(exp=int(time.time()) - 20)))).status_code == 200
    async with jwt_gateway(make_settings, jwt_secret=SECRET, jwt_leeway_seconds=0) as c:
        assert_invalid(await c.get("/jobs", headers=bearer(hs256(exp=int(time.time()) - 20))), "expired")


async def test_audience_and_issuer_are_not_required_when_not_configured(
    make_settings: Callable[..., Settings]
) -> None:
    async with jwt_gateway(make_settings, jwt_secret=SECRET) as c:
        assert (await c.get("/jobs", headers=bearer(hs256(aud="whatever", iss=None)))).status_code == 200


async def test_another_user_claim(make_settings: Callable[..., Settings], fakes: Fakes) -> None:
    async with jwt_gateway(make_settings, jwt_secret=SECRET, jwt_user_claim="preferred_username") as c:
        token = hs256(sub=str(uuid.uuid4()), preferred_username="carol@example.org")
        resp = await create_job(c, bearer(token))
        assert resp.status_code == 202 and resp.json()["user_id"] == "carol@example.org"
        assert_invalid(await c.get("/jobs", headers=bearer(hs256())), "'preferred_username'")


async def test_repeated_authorization_header_is_refused(make_settings: Callable[..., Settings]) -> None:
    async with jwt_gateway(make_settings, jwt_secret=SECRET) as c:
        headers = httpx.Headers(
            [("Authorization", f"Bearer {hs256()}"), ("Authorization", f"Bearer {hs256(sub='bob')}")]
        )
        assert_invalid(await c.get("/jobs", headers=headers), "once")


# --- PEM public keys -------------------------------------------------------------------------------

async def test_rs256_public_key_pem(
    make_settings: Callable[..., Settings], rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    pem = pem_public(rsa_key, tmp_path / "public.pem")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with jwt_gateway(make_settings, jwt_public_key=str(pem)) as c:
        good = jwt.encode(claims(), rsa_key, algorithm="RS256")
        resp = await c.get("/jobs", headers=bearer(good))
        assert resp.status_code == 200, resp.text
        assert_invalid(await c.get("/jobs", headers=bearer(jwt.encode(claims(), other, algorithm="RS256"))),
                       "signature")
        # The classic confusion: HS256 "signed" with the public key's PEM text as the secret.
        forged = _hmac_token(claims(), pem.read_bytes())
        assert_invalid(await c.get("/jobs", headers=bearer(forged)), "'HS256'")
        # RS512 with the right key, but only RS256 is configured (the default for an RSA key).
        assert_invalid(await c.get("/jobs", headers=bearer(jwt.encode(claims(), rsa_key, algorithm="RS512"))),
                       "RS512")
        assert_invalid(await c.get("/jobs", headers=bearer(unsigned(claims()))), "'none'")


def _hmac_token(payload: dict[str, Any], secret: bytes) -> str:
    import hashlib
    import hmac

    def part(value: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")

    signing_input = part({"alg": "HS256", "typ": "JWT"}) + b"." + part(payload)
    sig = base64.urlsafe_b64encode(hmac.new(secret, signing_input, hashlib.sha256).digest()).rstrip(b"=")
    return (signing_input + b"." + sig).decode()


async def test_es256_public_key_pem(
    make_settings: Callable[..., Settings], ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey,
    tmp_path: Path,
) -> None:
    pem = pem_public(ec_key, tmp_path / "ec.pem")
    async with jwt_gateway(make_settings, jwt_public_key=str(pem), jwt_audience=AUDIENCE) as c:
        good = jwt.encode(claims(), ec_key, algorithm="ES256")
        assert (await c.get("/jobs", headers=bearer(good))).status_code == 200
        other = ec.generate_private_key(ec.SECP256R1())
        assert_invalid(await c.get("/jobs", headers=bearer(jwt.encode(claims(), other, algorithm="ES256"))),
                       "signature")
        assert_invalid(await c.get("/jobs", headers=bearer(jwt.encode(claims(), rsa_key, algorithm="RS256"))),
                       "'RS256'")


# --- JWKS over HTTP --------------------------------------------------------------------------------

class JwksServer:
    """Serves a JWKS document over real HTTP on a free port; `keys` can change (rotation)."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.requests = 0
        self.fail = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                owner.requests += 1
                if owner.fail:
                    self.send_error(500)
                    return
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/realms/radiology/protocol/openid-connect/certs"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> JwksServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def jwk(key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    rsa_key = isinstance(key, rsa.RSAPrivateKey)
    algorithm = jwt.algorithms.RSAAlgorithm if rsa_key else jwt.algorithms.ECAlgorithm
    data = json.loads(algorithm.to_jwk(key.public_key()))
    return {**data, "kid": kid, "use": "sig", **extra}


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    with JwksServer() as server:
        yield server


async def test_jwks_with_key_rotation(
    make_settings: Callable[..., Settings], jwks: JwksServer, rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    # The provider also publishes an encryption key, as Keycloak does: it is never used to verify.
    enc = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.keys = [jwk(rsa_key, "k1", alg="RS256"), jwk(enc, "enc1", use="enc", alg="RSA-OAEP")]
    async with jwt_gateway(make_settings, jwt_jwks_url=jwks.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE,
                           jwt_jwks_min_refetch_seconds=0.3) as c:
        token1 = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "k1"})
        assert (await c.get("/jobs", headers=bearer(token1))).status_code == 200
        assert (await c.get("/jobs", headers=bearer(token1))).status_code == 200
        assert jwks.requests == 1  # cached

        # Signed with the encryption key's private half: that key is not a signing key.
        assert_invalid(await c.get("/jobs", headers=bearer(
            jwt.encode(claims(), enc, algorithm="RS256", headers={"kid": "enc1"}))), "does not know")

        # Rotation: the provider now signs with an EC key "k2" and has dropped k1.
        new_key = ec.generate_private_key(ec.SECP256R1())
        jwks.keys = [jwk(new_key, "k2")]
        await asyncio.sleep(0.35)
        token2 = jwt.encode(claims(sub="bob"), new_key, algorithm="ES256", headers={"kid": "k2"})
        resp = await c.get("/jobs", headers=bearer(token2))
        assert resp.status_code == 200, resp.text
        assert jwks.requests == 2
        # k1 is still in no JWKS: its tokens stop working once the cache refetched.
        await asyncio.sleep(0.35)
        assert_invalid(await c.get("/jobs", headers=bearer(token1)), "does not know")

        # A flood of made-up kids costs the provider at most one fetch per interval.
        before = jwks.requests
        for _ in range(20):
            forged = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": str(uuid.uuid4())})
            assert_invalid(await c.get("/jobs", headers=bearer(forged)), "does not know")
        assert jwks.requests - before <= 1

        # A key the JWKS has, used with an algorithm the token picks, is still refused.
        assert_invalid(await c.get("/jobs", headers=bearer(_hmac_token(claims(), b"k2"))), "'HS256'")


async def test_jwks_provider_down(make_settings: Callable[..., Settings], jwks: JwksServer,
                                  rsa_key: rsa.RSAPrivateKey) -> None:
    jwks.fail = True
    async with jwt_gateway(make_settings, jwt_jwks_url=jwks.url, jwt_jwks_min_refetch_seconds=0) as c:
        token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "k1"})
        resp = await c.get("/jobs", headers=bearer(token))
        assert resp.status_code == 503 and resp.json()["code"] == "service_unavailable"
        assert "identity provider" in resp.json()["detail"]
        # Back up: works; down again: the keys already known keep working.
        jwks.fail, jwks.keys = False, [jwk(rsa_key, "k1")]
        assert (await c.get("/jobs", headers=bearer(token))).status_code == 200
        jwks.fail = True
        assert (await c.get("/jobs", headers=bearer(token))).status_code == 200


# --- files, misconfiguration, header mode -----------------------------------------------------------

async def test_signed_file_urls_work_in_jwt_mode(
    make_settings: Callable[..., Settings], fakes: Fakes
) -> None:
    async with jwt_gateway(make_settings, jwt_secret=SECRET) as c:
        resp = await create_job(c, bearer(hs256()))
        job_id = resp.json()["job_id"]
        path = f"/files/alice/{job_id}/scan.png"
        token = c.app.state.signer.token("alice", job_id, "scan.png")  # type: ignore[attr-defined]
        assert (await c.get(f"{path}?token={token}")).content == PNG  # no header at all (an <img src>)
        # with an expired bearer token along: the signed URL still serves
        stale = bearer(hs256(exp=int(time.time()) - 3600))
        assert (await c.get(f"{path}?token={token}", headers=stale)).status_code == 200
        # the owner's token alone serves; the expired one alone is a 401; bob's is the 404
        assert (await c.get(path, headers=bearer(hs256()))).content == PNG
        assert_invalid(await c.get(path, headers=stale), "expired")
        assert (await c.get(path, headers=bearer(hs256(sub="bob")))).status_code == 404
        assert (await c.get(path, headers={"X-User-ID": "alice"})).status_code == 404


@pytest.mark.parametrize(("settings", "message"), [
    ({}, "needs a key"),
    ({"jwt_secret": SECRET, "jwt_jwks_url": "https://idp/certs"}, "one key source"),
    ({"jwt_secret": "short"}, "at least 32 bytes"),
    ({"jwt_secret": SECRET, "jwt_algorithms": "none"}, "'none'"),
    ({"jwt_secret": SECRET, "jwt_algorithms": "RS256"}, "cannot be used with an HMAC secret"),
    ({"jwt_public_key": "/nonexistent/key.pem"}, "cannot read"),
    ({"jwt_jwks_url": "https://idp/certs", "jwt_algorithms": "HS256"}, "cannot be used with a JWKS"),
    ({"jwt_jwks_url": "file:///etc/passwd"}, "http(s) URL"),
])
def test_misconfigured_jwt_mode_stops_the_start(
    make_settings: Callable[..., Settings], settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(AuthConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        create_app(make_settings(auth="jwt", **settings))


def test_gateway_process_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    env = {**os.environ, "RADIOLOGY_AUTH": "jwt", "RADIOLOGY_DATA_DIR": str(tmp_path),
           "RADIOLOGY_HTTP_PORT": "0", "PYTHONPATH": str(ROOT)}
    for name in ("RADIOLOGY_JWT_SECRET", "RADIOLOGY_JWT_PUBLIC_KEY", "RADIOLOGY_JWT_JWKS_URL"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-m", "services.gateway.server"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "gateway not started: RADIOLOGY_AUTH=jwt needs a key" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_header_mode_is_unchanged_and_ignores_bearer_tokens(
    make_settings: Callable[..., Settings], fakes: Fakes
) -> None:
    async with gateway_client(make_settings(jwt_secret=SECRET)) as c:
        resp = await c.get("/jobs", headers=bearer(hs256()))
        assert resp.status_code == 401 and resp.json()["code"] == "missing_identity"
        assert "www-authenticate" not in resp.headers
        resp = await create_job(c, {"X-User-ID": "alice", **bearer(hs256(sub="bob"))})
        assert resp.status_code == 202 and resp.json()["user_id"] == "alice"
        assert (await c.get("/jobs", headers={"X-User-ID": "../x"})).status_code == 400
