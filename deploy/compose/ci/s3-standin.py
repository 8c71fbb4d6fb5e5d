"""moto's S3 server with its state kept in a volume, as a CI stand-in for MinIO.

moto keeps objects in memory. Its request recorder appends every request to
$MOTO_RECORDER_FILEPATH (in the /data volume); at start this script replays that file into the
fresh server, so buckets and objects survive `compose down && up` like MinIO's. Marks itself
ready (for the healthcheck: `s3-standin --check`) only after the replay.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

PORT = 9000
READY = "/tmp/s3-standin.ready"
URL = f"http://127.0.0.1:{PORT}"


def check() -> int:
    if not os.path.exists(READY):
        return 1
    try:
        with urllib.request.urlopen(URL + "/moto-api/", timeout=5):
            return 0
    except OSError:
        return 1


def main() -> int:
    if sys.argv[1:] == ["--check"]:
        return check()
    try:
        os.unlink(READY)
    except FileNotFoundError:
        pass
    server = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "0.0.0.0", "-p", str(PORT)]
    )
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
    recording = os.environ["MOTO_RECORDER_FILEPATH"]
    if os.path.exists(recording) and os.path.getsize(recording):
        request = urllib.request.Request(URL + "/moto-api/recorder/replay-recording", method="POST")
        urllib.request.urlopen(request, timeout=600).close()
        print(f"s3-standin: replayed {recording}", flush=True)
    open(READY, "w").close()
    return server.wait()


if __name__ == "__main__":
    sys.exit(main())
