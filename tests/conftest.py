"""Test-wide environment: no network, caches in a temp dir.

The Hub endpoint points at a loopback port chosen here, before anything imports huggingface_hub (it reads
HF_ENDPOINT at import time); tests that need a Hub start the test server on that port (see the `hub_server`
fixture). Nothing can reach huggingface.co by accident.
"""

import os
import socket
import tempfile

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_HF_TMP = tempfile.mkdtemp(prefix="hf_llava_tests_")
os.environ["HF_HOME"] = os.path.join(_HF_TMP, "hf_home")
os.environ["HF_DATASETS_CACHE"] = os.path.join(_HF_TMP, "datasets_cache")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["HF_UPDATE_DOWNLOAD_COUNTS"] = "0"  # datasets would ping an S3 bucket on every Hub load
os.environ.setdefault("HF_LLAVA_TEST_HUB_PORT", str(_free_port()))
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{os.environ['HF_LLAVA_TEST_HUB_PORT']}"


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory):
    """A loopback Hugging Face Hub on HF_ENDPOINT for the session (tests/servers/hub_server.py).

    Writes need `token=hub_server.token`; repos live for the whole session, so use unique names. Files from
    1 KiB on go through git-LFS, so small test files exercise both upload paths.
    """
    from servers.hub_server import HubServer

    port = int(os.environ["HF_LLAVA_TEST_HUB_PORT"])
    with HubServer(tmp_path_factory.mktemp("hub"), port=port, lfs_threshold=1024) as server:
        yield server
