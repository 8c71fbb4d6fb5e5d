"""moto's S3 server with its state kept in a volume, as a CI stand-in for MinIO.

moto keeps objects in memory. Its request recorder appends every request it serves to
$MOTO_RECORDER_FILEPATH (in the /data volume). At start this script sets the previous recording
aside, starts a fresh server and sends it again every request that changed something (GET and HEAD
are skipped). Multipart uploads get new upload ids from the fresh server, so the ids in the
recorded part and completion requests are translated. The replayed requests form the new
recording (a compacted log), so buckets and objects survive `compose down && up` like MinIO's.
Requests are served one at a time, so that the recorder's log lines never interleave.
The stand-in reports ready (`s3-standin --check`, its healthcheck) only after the replay.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

PORT = 9000
READY = "/tmp/s3-standin.ready"
URL = f"http://127.0.0.1:{PORT}"


SERVE = f"""
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
run_simple("0.0.0.0", {PORT}, DomainDispatcherApplication(create_backend_app), threaded=False)
"""


def check() -> int:
    if not os.path.exists(READY):
        return 1
    try:
        with urllib.request.urlopen(URL + "/moto-api/", timeout=5):
            return 0
    except OSError:
        return 1


def replay(path: str) -> int:
    """Send the recorded requests that changed state to the fresh server; returns how many."""
    created: dict[str, str] = {}  # object path -> upload id of its latest CreateMultipartUpload
    upload_ids: dict[str, str] = {}  # recorded upload id -> the fresh server's
    sent = 0
    with open(path) as recording:
        for line in recording:
            entry = json.loads(line)
            method = entry["method"]
            if method in ("GET", "HEAD"):
                continue
            parts = urllib.parse.urlsplit(entry["url"])
            query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            old_id = dict(query).get("uploadId")
            if old_id:
                upload_ids.setdefault(old_id, created.get(parts.path, old_id))
                query = [(k, upload_ids[old_id] if k == "uploadId" else v) for k, v in query]
            url = URL + parts.path + ("?" + urllib.parse.urlencode(query) if query else "")
            body = entry.get("body") or b""
            if entry.get("body_encoded"):
                body = base64.b64decode(body)
            elif isinstance(body, str):
                body = body.encode()
            headers = {k: v for k, v in entry["headers"].items()
                       if k.lower() not in ("host", "content-length", "transfer-encoding")}
            # The recorder logs a request without Content-Type (a multipart part) with werkzeug's
            # default, form-urlencoded, which would make the server parse the bytes as a form.
            for key in [k for k, v in headers.items() if k.lower() == "content-type"
                        and v.startswith("application/x-www-form-urlencoded")]:
                headers[key] = "application/octet-stream"
            headers.setdefault("Content-Type", "application/octet-stream")
            request = urllib.request.Request(url, data=body if method != "DELETE" or body else None,
                                             headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    answer = response.read()
            except urllib.error.HTTPError as exc:  # e.g. deleting what is already gone
                detail = exc.read()[:300]
                print(f"s3-standin: replay {method} {parts.path}: {exc.code} {detail!r}", flush=True)
                continue
            sent += 1
            if method == "POST" and "uploads" in dict(query):
                found = re.search(rb"<UploadId>([^<]+)</UploadId>", answer)
                if found:
                    created[parts.path] = found.group(1).decode()
    return sent


def main() -> int:
    if sys.argv[1:] == ["--check"]:
        return check()
    try:
        os.unlink(READY)
    except FileNotFoundError:
        pass
    recording = os.environ["MOTO_RECORDER_FILEPATH"]
    previous = recording + ".replaying"
    if os.path.exists(previous):  # an earlier replay was interrupted: its partial log is incomplete
        if os.path.exists(recording):
            os.unlink(recording)
    elif os.path.exists(recording):
        os.rename(recording, previous)
    # moto_server is multi-threaded, and its recorder's appends of concurrent requests (parallel
    # multipart parts) can interleave in the log: serve one request at a time instead.
    server = subprocess.Popen([sys.executable, "-c", SERVE])
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(URL + "/moto-api/", timeout=2).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                return 1
            time.sleep(0.2)
    if os.path.exists(previous):
        count = replay(previous)
        os.unlink(previous)
        print(f"s3-standin: replayed {count} requests", flush=True)
    open(READY, "w").close()
    return server.wait()


if __name__ == "__main__":
    sys.exit(main())
