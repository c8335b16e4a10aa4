"""Two servers: a storage account on server A whose customer-managed key lives in a vault on
server B, reached over HTTPS (`[[remote_vaults]]` in A's configuration file).

A remote vault publishes no change events to A, so A learns of a change when its cached account
key expires (the cache TTL, `--cmk-cache-ttl`): that bound is what this test shows. A runs with
the test clock, so passing the TTL is a clock jump, not a sleep.
"""

from __future__ import annotations

import os
from pathlib import Path

from azure.mgmt.storage import models as sm

from harness import Coffer, forget, unique
from test_cmk import ENCRYPTION_USER, Blobs, cmk, create_account, health, update

TTL_S = 30


class PinnedPorts(Coffer):
    """A server that comes back on the ports it first got (A's configuration names them)."""

    def command(self) -> list[str]:
        cmd = super().command()
        if self.endpoints:
            ports = {"--listen": self.endpoints["management"], "--blob-listen": self.endpoints["blob"],
                     "--proxy-listen": self.endpoints["proxy"]}
            for flag, url in ports.items():
                cmd[cmd.index(flag) + 1] = "127.0.0.1:" + url.rsplit(":", 1)[1]
        return cmd


class WithConfig(Coffer):
    def __init__(self, base_dir: Path, config: Path, **kwargs):
        super().__init__(base_dir, **kwargs)
        self.config = config

    def command(self) -> list[str]:
        return super().command() + ["--config", str(self.config), "--cmk-cache-ttl", str(TTL_S),
                                    "--cmk-poll-interval", str(TTL_S)]


def test_key_in_a_vault_on_another_server(tmp_path):
    b = PinnedPorts(tmp_path / "b").start()
    a = None
    try:
        kv = b.data_vault(b.create_rg(), role="Key Vault Crypto Officer", purge_protection=True)
        key = kv.keys.create_rsa_key(unique("remote-"), size=2048)
        server_a = b.new_sp(unique("server-a-"))  # the principal A signs in as at B
        b.assign_role(kv.vault.id, ENCRYPTION_USER, server_a.object_id)
        secret = tmp_path / "b-client-secret"
        secret.write_text(server_a.client_secret)
        os.chmod(secret, 0o600)
        config = tmp_path / "a.toml"
        config.write_text(
            "[[remote_vaults]]\n"
            f'vault_dns_suffix = "{b.vault_dns_suffix}"\n'
            f'connect = "127.0.0.1:{b.management.rsplit(":", 1)[1]}"\n'
            f'token_url = "{b.authority}/{b.tenant_id}/oauth2/v2.0/token"\n'
            f'client_id = "{server_a.client_id}"\n'
            f'client_secret_file = "{secret}"\n'
            f'ca_file = "{b.ca}"\n'
            'region = "eastus"\n')
        a = WithConfig(tmp_path / "a", config, test_clock=True).start()

        rg = a.create_rg()
        account = create_account(a, rg, identity=sm.Identity(type="SystemAssigned"))
        blobs = Blobs(a, account)
        updated = update(a, rg, account.name, encryption=cmk(kv.url, key.name))
        assert updated.encryption.key_vault_properties.current_versioned_key_identifier == key.id
        blobs.assert_intact()
        assert health(a, account)["status"] == "Healthy"

        # Disable the key on B: A serves from its cache until the TTL passes, then refuses.
        kv.keys.update_key_properties(key.name, enabled=False)
        blobs.assert_intact()
        a.advance_clock(TTL_S + 1)
        blobs.assert_cut_off()
        assert health(a, account)["status"] == "KeyDisabled"
        kv.keys.update_key_properties(key.name, enabled=True)
        a.advance_clock(TTL_S + 1)
        blobs.assert_intact()

        # A new version on B is picked up at the next poll.
        rotated = kv.keys.rotate_key(key.name)
        a.advance_clock(TTL_S + 1)
        blobs.assert_intact()
        kvp = a.mgmt_clients().storage.storage_accounts.get_properties(rg, account.name).encryption.key_vault_properties
        assert kvp.current_versioned_key_identifier == rotated.id

        # Stop B: once the TTL passes, A's data is cut off; bring B back: restored.
        b.stop()
        a.advance_clock(TTL_S + 1)
        blobs.assert_cut_off("KeyVaultVaultNotFound")
        assert health(a, account)["status"] == "VaultUnreachable"
        b.start()
        a.advance_clock(TTL_S + 1)
        blobs.assert_intact()
        assert health(a, account)["status"] == "Healthy"
    finally:
        for server in (a, b):
            if server is not None:
                server.stop()
                forget(server)
