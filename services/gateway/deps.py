"""Request dependencies: settings, backends, URL signer and the caller's identity."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from services.common.config import Settings
from services.common.identity import USER_ID_RULE, is_valid_user_id
from services.gateway import auth
from services.gateway.catalogue import Catalogue
from services.gateway.clients import Backends
from services.gateway.errors import INVALID_TOKEN, INVALID_USER_ID, MISSING_IDENTITY, ApiError
from services.gateway.signing import UrlSigner
from services.gateway.submit import Submissions


# async on purpose: FastAPI runs a plain `def` dependency in a worker thread, a thread hop per
# dependency per request for what is an attribute read.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_backends(request: Request) -> Backends:
    return request.app.state.backends


async def get_signer(request: Request) -> UrlSigner:
    return request.app.state.signer


async def get_catalogue(request: Request) -> Catalogue:
    return request.app.state.catalogue


async def get_submissions(request: Request) -> Submissions:
    return request.app.state.submissions


SettingsDep = Annotated[Settings, Depends(get_settings)]
BackendsDep = Annotated[Backends, Depends(get_backends)]
SignerDep = Annotated[UrlSigner, Depends(get_signer)]
CatalogueDep = Annotated[Catalogue, Depends(get_catalogue)]
SubmissionsDep = Annotated[Submissions, Depends(get_submissions)]


def _from_header(request: Request) -> str | None:
    values = request.headers.getlist("x-user-id")
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(INVALID_USER_ID, "Send the X-User-ID header once.")
    value = values[0]
    if not is_valid_user_id(value):
        raise ApiError(
            INVALID_USER_ID,
            f"X-User-ID must be {USER_ID_RULE}.",
        )
    return value


async def optional_user(
    request: Request,
    # Declared for the API docs; read from request.headers to see repeats and empty values.
    x_user_id: Annotated[
        str | None, Header(alias="X-User-ID", description="Caller's user id (auth mode `header` only)")
    ] = None,
) -> str | None:
    """The caller's user id when the request carries one (validated), else None. In jwt mode only a
    verified Bearer token counts (401 for one that does not verify); X-User-ID is ignored."""
    verifier: auth.JwtVerifier | None = request.app.state.jwt
    if verifier is not None:
        return await verifier.user(request)
    return _from_header(request)


async def current_user(request: Request, user: Annotated[str | None, Depends(optional_user)]) -> str:
    if user is None:
        if request.app.state.jwt is not None:
            raise auth.missing_token()
        raise ApiError(MISSING_IDENTITY)
    return user


class FileCaller:
    """Who asks for a file: `user`, or None with the token `error` kept aside, because a valid
    signed URL serves the file even when a stale Bearer token comes along with it (jwt mode)."""

    def __init__(self, user: str | None, error: ApiError | None = None) -> None:
        self.user = user
        self.error = error


async def file_caller(request: Request, x_user_id: Annotated[str | None, Header(
        alias="X-User-ID", description="Caller's user id (auth mode `header` only)")] = None) -> FileCaller:
    if request.app.state.jwt is None:
        return FileCaller(_from_header(request))
    try:
        return FileCaller(await request.app.state.jwt.user(request))
    except ApiError as exc:
        return FileCaller(None, exc)


CurrentUser = Annotated[str, Depends(current_user)]
OptionalUser = Annotated[str | None, Depends(optional_user)]
FileCallerDep = Annotated[FileCaller, Depends(file_caller)]
# What the two can answer, for the routes' documentation.
IDENTITY_ERRORS = (INVALID_USER_ID, MISSING_IDENTITY, INVALID_TOKEN)
OPTIONAL_IDENTITY_ERRORS = (INVALID_USER_ID, INVALID_TOKEN)
