"""The web app against a gateway in jwt mode (a platform of its own): it learns the mode from
GET /config, takes a token pasted in its field or handed over by an OIDC redirect (#access_token=,
then removed from the address bar), and sends it as Authorization: Bearer on every request, the
upload, the live updates and the file fetches included; never X-User-ID."""

from __future__ import annotations

import time
from collections.abc import Iterator

import jwt
import pytest

from tests.conftest import start_platform

from .conftest import VIEWPORT, new_user

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SECRET = "a-test-secret-of-at-least-32-bytes!!"
JOB_TIMEOUT = 90_000  # ms


def token_for(user: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + 3600}, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def jwt_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    platform = start_platform(tmp_path_factory.mktemp("jwt-web"), env={
        "RADIOLOGY_AUTH": "jwt", "RADIOLOGY_JWT_SECRET": SECRET,
    })
    yield platform
    platform.stop()


@pytest.fixture
def jwt_page(browser, jwt_platform) -> Iterator[object]:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport=VIEWPORT, base_url=jwt_platform.base_url)
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.api_requests = []  # (path, headers) of every request to the gateway's API
    base = jwt_platform.base_url
    page.on("request", lambda r: page.api_requests.append((r.url.split(base, 1)[-1], r.headers)))
    yield page
    context.close()
    assert not errors, errors


def _api(requests: list[tuple[str, dict[str, str]]]) -> list[tuple[str, dict[str, str]]]:
    """The requests that need an identity: the API's, and files fetched without a signed URL."""
    def needs(path: str) -> bool:
        unsigned_file = path.startswith("/files/") and "token=" not in path
        return path.startswith(("/jobs", "/tasks", "/usage")) or unsigned_file

    return [(path, headers) for path, headers in requests if needs(path)]


def test_a_token_from_an_oidc_redirect_is_used_on_every_request(  # type: ignore[no-untyped-def]
    jwt_page, anatomical_nii
) -> None:
    page = jwt_page
    user = new_user("oidc")
    token = token_for(user)
    page.goto(f"/#access_token={token}&token_type=Bearer&expires_in=3600")
    page.get_by_text(f"Signed in as {user}").wait_for()
    assert "access_token" not in page.url  # gone from the address bar (replaced, not a new entry)
    assert page.get_by_label("Access token").get_attribute("type") == "password"

    # A volume: the job list, the upload, live updates, and NiiVue loading the input and results.
    page.set_input_files("#file-input", [str(anatomical_nii)])
    page.get_by_label("Operation").select_option("blur")
    page.get_by_role("button", name="Upload and run").click()
    page.locator('.job-detail[data-status="SUCCESS"]').wait_for(timeout=JOB_TIMEOUT)
    page.wait_for_timeout(1500)  # the viewer fetches its files
    # Overlaid on its input: NiiVue loads the input by its unsigned URL, which needs the token.
    unsigned_input = f"/{user}/"
    with page.expect_response(lambda r: unsigned_input in r.url and r.url.endswith("/anatomical.nii")) as got:
        page.get_by_label("Overlay result on input").check()
    assert got.value.status == 200, got.value.status
    sent = _api(page.api_requests)
    paths = [p for p, _ in sent]
    assert any(p == "/jobs" for p in paths) and any(p.endswith("/events") for p in paths), paths
    assert any(p.startswith("/files/") and p.endswith("/anatomical.nii") for p in paths), paths
    for path, headers in sent:
        assert headers.get("authorization") == f"Bearer {token}", path
        assert "x-user-id" not in headers, path


def test_a_pasted_token_signs_in_and_a_bad_one_is_refused(jwt_page) -> None:  # type: ignore[no-untyped-def]
    page = jwt_page
    page.goto("/")
    page.get_by_text("Paste an access token to start.").wait_for()
    field = page.get_by_label("Access token")
    field.fill("not a token")
    page.get_by_role("button", name="Use this token").click()
    page.get_by_text("That is not an access token").wait_for()

    user = new_user("pasted")
    field.fill(token_for(user))
    page.get_by_role("button", name="Use this token").click()
    page.get_by_text(f"Signed in as {user}").wait_for()
    assert field.input_value() == ""  # not left on screen
    page.wait_for_timeout(500)  # the job list loads
    listed = [h for p, h in _api(page.api_requests) if p.startswith("/jobs")]
    assert listed and all(h.get("authorization", "").startswith("Bearer ") for h in listed)


def test_the_gateway_names_its_mode(jwt_platform) -> None:  # type: ignore[no-untyped-def]
    import httpx

    assert httpx.get(f"{jwt_platform.base_url}/config").json() == {"auth": "jwt"}
    # X-User-ID means nothing in jwt mode.
    assert httpx.get(f"{jwt_platform.base_url}/usage", headers={"X-User-ID": "alice"}).status_code == 401

