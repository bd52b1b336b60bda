"""Storage stand-ins for the tests, each a real server on a free port, started by the suite.

- ``MotoServer``: moto's S3 over HTTP, with IAM enforcement on, so a bucket our credentials
  may not read answers a real 403;
- ``GcsEmulator``: gcp-storage-emulator, in memory, behind a ``GcsForbiddingProxy``: the
  emulator has no IAM, so the proxy answers GCS's own 403 for the buckets it is told to, and
  forwards everything else untouched (it also records the paths asked, for "no SDK call");
- ``Azurite``: azurite-blob from tests/node_modules (``npm ci --prefix tests``), in memory, with
  a second account whose key the worker does not have;
- ``SilentEndpoint``: accepts connections and never answers (a hung endpoint).

Every server's access log is kept, so a test can check that a refused location was never asked.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
from azure.storage.blob import BlobServiceClient, ContentSettings
from botocore.config import Config
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from tests.services import free_port, listening, wait_until

REGION = "us-east-1"
# Azurite's well-known development account and key (public, in Microsoft's docs).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
LOCKED_ACCOUNT = "lockedacct"  # a second Azurite account: the worker holds no key for it
LOCKED_KEY = "bG9ja2VkLWFjY291bnQta2V5LW5vdC1naXZlbi10by10aGUtd29ya2Vy"
LOCKED_BUCKET = "locked-recordings"  # S3 and GCS: a bucket our credentials may not read


class Server:
    """A subprocess on a free port, with its output in a log file."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(
        self, command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
        log.close()
        try:
            wait_until(lambda: listening(self.port) or self.process.poll() is not None, 30)
        finally:
            if self.process.poll() is not None:
                raise RuntimeError(f"{command[0]} died:\n{self.log_path.read_text()[-2000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None


class MotoServer(Server):
    """moto's S3, IAM enforced after the three calls that create the worker's user."""

    def start(self) -> MotoServer:
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
        self._spawn(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)], env
        )
        iam = boto3.client(
            "iam", endpoint_url=self.url, region_name=REGION,
            aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap",
        )  # fmt: skip
        iam.create_user(UserName="worker")
        locked = f"arn:aws:s3:::{LOCKED_BUCKET}/*"
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "s3:GetObject", "Resource": locked},
            ],
        }
        iam.put_user_policy(
            UserName="worker", PolicyName="recordings", PolicyDocument=json.dumps(policy)
        )
        key = iam.create_access_key(UserName="worker")["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        return self

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL_S3": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self) -> Any:
        return boto3.client(
            "s3", endpoint_url=self.url, region_name=REGION,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(retries={"total_max_attempts": 1}),
        )  # fmt: skip


class GcsEmulator(Server):
    def start(self) -> GcsEmulator:
        command = [
            sys.executable, "-m", "gcp_storage_emulator", "start",
            "--host", "127.0.0.1", "--port", str(self.port), "--in-memory",
        ]  # fmt: skip
        self._spawn(command)
        return self

    def client(self) -> storage.Client:
        return storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.url},
        )


class GcsForbiddingProxy:
    """In front of the GCS emulator: GCS's 403 for ``forbidden`` buckets, the rest forwarded."""

    def __init__(self, upstream_port: int, forbidden: set[str]) -> None:
        self.upstream_port = upstream_port
        self.forbidden = forbidden
        self.paths: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GcsForbiddingProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def log(self) -> str:
        return "\n".join(self.paths)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the paths are kept in proxy.paths

            def _relay(self) -> None:
                proxy.paths.append(f"{self.command} {self.path}")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                bucket = re.search(r"/b/([^/?]+)", self.path)
                if bucket and bucket.group(1) in proxy.forbidden:
                    self._answer(403, {"Content-Type": "application/json"}, _gcs_forbidden())
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                upstream.request(self.command, self.path, body=body, headers=headers)
                reply = upstream.getresponse()
                data = reply.read()
                keep = {
                    k: v for k, v in reply.getheaders()
                    if k.lower() not in ("transfer-encoding", "connection", "content-length")
                }  # fmt: skip
                upstream.close()
                self._answer(reply.status, keep, data)

            def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _relay

        return Handler


def _gcs_forbidden() -> bytes:
    message = (
        "worker@project.iam.gserviceaccount.com does not have storage.objects.get access "
        "to the Google Cloud Storage object. Permission 'storage.objects.get' denied."
    )
    error = {
        "code": 403,
        "message": message,
        "errors": [{"message": message, "reason": "forbidden"}],
    }
    return json.dumps({"error": error}).encode()


class Azurite(Server):
    """azurite-blob, in memory, with the development account and a locked second account."""

    # tests/package.json pins it; scripts/test installs it beside that file (npm ci --prefix tests).
    BINARY = Path(__file__).with_name("node_modules") / ".bin" / "azurite-blob"

    def start(self, workdir: Path) -> Azurite:
        if not self.BINARY.exists():
            missing = f"{self.BINARY} is missing: run `npm ci --prefix tests` (scripts/test does)"
            raise RuntimeError(missing)
        env = {
            **os.environ,
            "AZURITE_ACCOUNTS": f"{DEV_ACCOUNT}:{DEV_KEY};{LOCKED_ACCOUNT}:{LOCKED_KEY}",
        }
        command = [
            str(self.BINARY), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
            "--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck",
        ]  # fmt: skip
        # In memory, Azurite refuses --location; its working directory is a scratch one anyway.
        self._spawn(command, env, cwd=workdir)
        return self

    def connection_string(self, account: str = DEV_ACCOUNT, key: str = DEV_KEY) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
            f"BlobEndpoint={self.url}/{account};"
        )

    def client(self, account: str = DEV_ACCOUNT) -> BlobServiceClient:
        key = DEV_KEY if account == DEV_ACCOUNT else LOCKED_KEY
        return BlobServiceClient.from_connection_string(
            self.connection_string(account, key), retry_total=0
        )


class SilentEndpoint:
    """Accepts TCP connections (the kernel does) and never answers: a hung server."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.port = self.socket.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.socket.close()


class Emulators:
    """The three stand-ins together, with what tests need: upload, a URI per provider, env."""

    def __init__(
        self, moto: MotoServer, gcs: GcsEmulator, proxy: GcsForbiddingProxy, azurite: Azurite
    ) -> None:
        self.moto, self.gcs, self.proxy, self.azurite = moto, gcs, proxy, azurite
        self._s3 = moto.client()
        self._gcs = gcs.client()

    def create_containers(self, names: tuple[str, ...]) -> None:
        for name in names:
            self._s3.create_bucket(Bucket=name)
            self._gcs.create_bucket(name)
            self.azurite.client().create_container(name)
        self.azurite.client(LOCKED_ACCOUNT).create_container(names[0])

    def uri(self, provider: str, container: str, key: str, account: str = DEV_ACCOUNT) -> str:
        if provider == "s3":
            return f"s3://{container}/{key}"
        if provider == "gcs":
            return f"gs://{container}/{key}"
        return f"{self.azurite.url}/{account}/{container}/{key}"

    def upload(
        self, provider: str, container: str, key: str, data: bytes, account: str = DEV_ACCOUNT
    ) -> None:
        if provider == "s3":
            self._s3.put_object(Bucket=container, Key=key, Body=data, ContentType="video/mp4")
        elif provider == "gcs":
            self._gcs.bucket(container).blob(key).upload_from_string(data, content_type="video/mp4")
        else:
            blob = self.azurite.client(account).get_blob_client(container, key)
            blob.upload_blob(data, content_settings=ContentSettings(content_type="video/mp4"))

    def worker_env(self) -> dict[str, str]:
        return {
            **self.moto.env(),
            "STORAGE_EMULATOR_HOST": self.proxy.url,
            "AZURE_STORAGE_CONNECTION_STRING": self.azurite.connection_string(),
        }

    def reads(self, container: str) -> dict[str, list[str]]:
        """Per stand-in, the reads (HEAD, GET) that named this bucket or container."""
        logs = {"s3": self.moto.log(), "gcs": self.proxy.log(), "azure_blob": self.azurite.log()}
        pattern = re.compile(rf"\b(?:HEAD|GET) /\S*\b{re.escape(container)}\b")
        return {name: pattern.findall(text) for name, text in logs.items()}
