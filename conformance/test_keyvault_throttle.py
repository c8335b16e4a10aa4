"""Optional per-vault throttling in Azure Key Vault's style (`--vault-throttle`): a weighted sum of
4,000 units per vault per 10 seconds (a software-key creation costs 200, an operation on an RSA-2048 or
EC key 1), then 429 `Throttled` with `Retry-After`; throttled requests do not count. Off by default."""
from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError

from conftest import _finish, _start
from harness import unique


@pytest.fixture
def throttled(tmp_path_factory: pytest.TempPathFactory):
    """A private server with --vault-throttle and a test clock (to move the window without waiting)."""
    server = _start(tmp_path_factory, "coffer-throttle", test_clock=True, extra_args=("--vault-throttle",))
    yield server
    _finish(server)


def test_a_full_window_gets_429_with_retry_after_until_it_moves_on(throttled):
    kv = throttled.data_vault()
    other = throttled.data_vault()
    # Twenty creations (200 units each) fill the vault's 4,000 units for this 10-second window.
    for i in range(20):
        kv.keys.create_ec_key(f"k{i}")
    client = kv.keys  # the harness's clients do not retry, so the 429 surfaces
    with pytest.raises(HttpResponseError) as info:
        client.create_ec_key("one-too-many")
    assert info.value.status_code == 429
    assert info.value.error.code == "Throttled"
    wait = int(info.value.response.headers["Retry-After"])
    assert 1 <= wait <= 10
    # Even a read is refused now (1 unit more than the window holds), and nothing was created.
    with pytest.raises(HttpResponseError) as info:
        client.get_key("k0")
    assert info.value.status_code == 429
    # Another vault has its own window.
    other.keys.create_ec_key("unaffected")
    # Once the window has moved past the creations, the vault answers again; the refused
    # requests did not count.
    throttled.advance_clock(11)
    client = kv.reconnect().keys
    assert client.create_ec_key("one-too-many").name == "one-too-many"
    assert client.get_key("k0").name == "k0"


def test_larger_rsa_keys_weigh_more(throttled):
    kv = throttled.data_vault()
    key = kv.keys.create_rsa_key(unique("rsa4096-"), size=4096)  # 200 units
    client = kv.keys
    # Each get of an RSA-4096 key costs 8 (Azure: 500 per 10 s): 3,800 units left hold 475 gets.
    session, token = kv.session, kv.token()
    url = f"{key.id}?api-version=7.6"
    codes = []
    for _ in range(476):
        r = session.get(url, headers={"Authorization": f"Bearer {token}"})
        codes.append(r.status_code)
        if r.status_code != 200:
            assert r.status_code == 429 and r.json()["error"]["code"] == "Throttled"
            assert 1 <= int(r.headers["Retry-After"]) <= 10
            break
    assert codes.count(200) == 475 and codes[-1] == 429, codes[-3:]
    with pytest.raises(HttpResponseError):
        client.get_key(key.name)


def test_off_by_default(coffer):
    kv = coffer.data_vault()
    for i in range(21):  # one creation more than a throttled window holds
        kv.keys.create_ec_key(f"k{i}")
