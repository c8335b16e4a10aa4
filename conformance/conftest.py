"""Fixtures: a session-wide Coffer server, per-test servers (test clock, restart), helpers.

`coffer` is a `harness.Coffer`: `.endpoints`, `.admin`, `.ca`, `.credential(client_id, secret)`,
`.mgmt_clients(cred)`, `.token(cred, scope)`, `.new_sp(name)`, `.arm(method, path)` and more.
"""

from __future__ import annotations

import pytest

import harness
from harness import Coffer, Principal


def pytest_configure(config: pytest.Config) -> None:
    harness.scrub_proxy_env()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Attach the stderr of every server alive for this test to its failure report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for server in harness.live_servers():
            report.sections.append((f"coffer stderr ({server.log_path})", server.log_tail()))


def _start(tmp_path_factory: pytest.TempPathFactory, name: str, **flags) -> Coffer:
    server = Coffer(tmp_path_factory.mktemp(name), **flags)
    error = None
    try:
        server.start()
    except harness.CofferStartError as exc:
        error = str(exc)
    if error is not None:
        pytest.fail(error, pytrace=False)
    return server


def _finish(server: Coffer) -> None:
    try:
        code = server.stop()
    finally:
        harness.forget(server)
    assert code in (0, None), f"coffer exited with {code} after SIGTERM (expected 0)\n{server.log_tail()}"


@pytest.fixture(scope="session")
def coffer(tmp_path_factory: pytest.TempPathFactory):
    """The shared server (no test clock). Tests on it create uniquely named resources."""
    server = _start(tmp_path_factory, "coffer-session")
    yield server
    _finish(server)


@pytest.fixture
def coffer_clock(tmp_path_factory: pytest.TempPathFactory):
    """A private server started with --test-clock (advancing it must not disturb other tests)."""
    server = _start(tmp_path_factory, "coffer-clock", test_clock=True)
    yield server
    _finish(server)


@pytest.fixture
def coffer_private(tmp_path_factory: pytest.TempPathFactory):
    """A private server the test may stop and start again (restart tests)."""
    server = _start(tmp_path_factory, "coffer-private")
    yield server
    _finish(server)


def new_sp(env: Coffer, name: str | None = None) -> Principal:
    """A fresh service principal with no role: tests make their own principals."""
    return env.new_sp(name)


@pytest.fixture
def admin(coffer: Coffer) -> harness.MgmtClients:
    """Management clients authenticated as the admin service principal (Owner of the subscription)."""
    return coffer.mgmt_clients()


@pytest.fixture
def rg(coffer: Coffer) -> str:
    """A fresh, empty resource group in eastus, created by the admin."""
    return coffer.create_rg()


@pytest.fixture
def sp(coffer: Coffer) -> Principal:
    """A fresh service principal with no role assignments."""
    return new_sp(coffer)


@pytest.fixture
def kv(coffer: Coffer, rg: str) -> harness.DataVault:
    """A fresh vault (soft delete 7 days, no purge protection) and a fresh principal that is
    Key Vault Administrator on it; `kv.keys` is that principal's KeyClient."""
    return coffer.data_vault(rg)


@pytest.fixture
def kv_protected(coffer: Coffer, rg: str) -> harness.DataVault:
    """Like `kv`, on a vault with purge protection (retention 7 days)."""
    return coffer.data_vault(rg, purge_protection=True)
