"""Test configuration: offline, seeded, few threads; `-m slow` tests only with --runslow."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# The test models are tiny: one thread beats two (no contention between intra-op workers).
torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _uniar_cache(tmp_path_factory):
    """Keep encoded image pools and feature networks of the test run out of the user's cache."""
    os.environ["UNIAR_CACHE"] = str(tmp_path_factory.mktemp("uniar_cache"))
    yield


@pytest.fixture(scope="session")
def tiny_vq(tmp_path_factory):
    from helpers import save_tiny_vq

    return save_tiny_vq(tmp_path_factory.mktemp("vq") / "vq")


@pytest.fixture(scope="session")
def tiny_kl(tmp_path_factory):
    from helpers import save_tiny_kl

    return save_tiny_kl(tmp_path_factory.mktemp("kl") / "kl")
