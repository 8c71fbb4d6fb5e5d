"""Signed, expiring file URLs, so that <img src> and NiiVue can load results without headers.

token = "{exp}.{sig}", sig = urlsafe-base64 (unpadded) HMAC-SHA256(secret, "{user}/{job}/{filename}\n{exp}").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from urllib.parse import quote

from services.common.config import Settings
from services.common.keys import object_key
from services.gateway.text import ascii_digits

KEY_FILE = "signing.key"


def load_or_create_secret(data_dir: str | Path) -> bytes:
    """The key in {data_dir}/signing.key, created once (mode 0600) and shared by every gateway process
    on that data dir, so URLs survive restarts and work across replicas."""
    path = Path(data_dir) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)  # atomic and never overwrites: a concurrent creator's key wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    secret = path.read_text().strip()
    if not secret:
        raise RuntimeError(f"{path} is empty; delete it to generate a new signing key")
    return secret.encode()


class UrlSigner:
    def __init__(self, secret: bytes, ttl_seconds: int) -> None:
        self._secret = secret
        self.ttl = ttl_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlSigner:
        secret = settings.signing_secret.encode() or load_or_create_secret(settings.data_dir)
        return cls(secret, settings.url_ttl_seconds)

    def _sig(self, path: str, exp: int) -> str:
        mac = hmac.new(self._secret, f"{path}\n{exp}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def token(self, user_id: str, job_id: str, filename: str, now: float | None = None) -> str:
        exp = int(now if now is not None else time.time()) + self.ttl
        return f"{exp}.{self._sig(object_key(user_id, job_id, filename), exp)}"

    def url(self, user_id: str, job_id: str, filename: str) -> str:
        path = "/".join(quote(p, safe="") for p in (user_id, job_id, filename))
        return f"/files/{path}?token={self.token(user_id, job_id, filename)}"

    def verify(self, user_id: str, job_id: str, filename: str, token: str, now: float | None = None) -> bool:
        exp_text, dot, sig = token.partition(".")
        if not dot or not ascii_digits(exp_text) or len(token) > 200:
            return False
        exp = int(exp_text)
        if exp < (now if now is not None else time.time()):
            return False
        try:
            expected = self._sig(object_key(user_id, job_id, filename), exp)
        except ValueError:
            return False
        return hmac.compare_digest(expected.encode(), sig.encode())
