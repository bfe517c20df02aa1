"""Shared pytest set-up: the ci profile, offline switches, one thread per process, a network blocker."""
import os, socket
import pytest

os.environ.setdefault("LLM_COURSE_PROFILE", "ci")
for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"): os.environ[k] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")


class NetworkBlocked(RuntimeError):
    "Raised when code under test tries to open a network connection."


@pytest.fixture
def no_network(monkeypatch):
    "Make every attempt to open a non-local socket connection raise `NetworkBlocked`."
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1") or host.startswith("/")):
            return real_connect(self, address)
        raise NetworkBlocked(f"network access attempted: {address!r}")

    real_getaddrinfo = socket.getaddrinfo

    def no_dns(host, *a, **k):
        if host in (None, "localhost", "127.0.0.1", "::1"): return real_getaddrinfo(host, *a, **k)
        raise NetworkBlocked(f"DNS lookup attempted: {host!r}")
    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    yield


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    "A fresh, empty LLM_COURSE_CACHE for one test."
    monkeypatch.setenv("LLM_COURSE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
