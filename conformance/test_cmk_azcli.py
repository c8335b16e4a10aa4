"""The customer-managed-key flow driven by the real az CLI (azure-cli, conformance/requirements-azcli.txt).

azure-cli lives in its own virtualenv (its pins clash with the SDK suite's); scripts/test.sh installs
it into .venv-azcli and passes the `az` path in COFFER_AZ. Without COFFER_AZ the test is skipped.

The CLI is set up as AZURE-CLIENTS.md Part 2 measured it: an isolated AZURE_CONFIG_DIR, trust from
REQUESTS_CA_BUNDLE (the server's CA), MSAL instance discovery off, and the server's CONNECT proxy
for the per-resource host names ({vault}.vault.<sfx>, {account}.blob.<sfx>); the cloud is registered
from the server's `GET /metadata/endpoints`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness import PROXY_ENV_VARS, unique

pytestmark = pytest.mark.skipif(
    not os.environ.get("COFFER_AZ"),
    reason="COFFER_AZ is not set (path of an az CLI installed from conformance/requirements-azcli.txt; "
           "scripts/test.sh installs it into .venv-azcli and sets it)",
)

AZ_TIMEOUT_S = 180  # one az invocation (start-up, token, ARM LRO polling with Retry-After)
CLOUD = "Coffer"
LOCATION = "eastus"


class AzError(AssertionError):
    pass


class Az:
    """Runs `az` in a private config dir against one Coffer server."""

    def __init__(self, binary: str, coffer, tmp_path: Path):
        self.binary = binary
        self.workdir = tmp_path
        config_dir = tmp_path / "azure-config"
        config_dir.mkdir()
        env = {k: v for k, v in os.environ.items()
               if k not in PROXY_ENV_VARS and not k.startswith(("AZURE_", "MSAL_"))}
        env.update({
            "AZURE_CONFIG_DIR": str(config_dir),
            "REQUESTS_CA_BUNDLE": coffer.ca,
            "AZURE_CORE_INSTANCE_DISCOVERY": "false",
            "AZURE_CORE_COLLECT_TELEMETRY": "false",
            "AZURE_CORE_NO_COLOR": "true",
            "HTTPS_PROXY": coffer.proxy,
            "NO_PROXY": "127.0.0.1,localhost",
        })
        self.env = env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [self.binary, *args, "--output", "json"]
        try:
            proc = subprocess.run(cmd, env=self.env, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=AZ_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise AzError(f"az {_shown(args)} did not finish within {AZ_TIMEOUT_S}s\n"
                          f"stdout:\n{exc.stdout}\nstderr:\n{exc.stderr}") from None
        if check and proc.returncode != 0:
            raise AzError(f"az {_shown(args)} exited with {proc.returncode}\n"
                          f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-8000:]}")
        return proc

    def json(self, *args: str) -> Any:
        proc = self.run(*args)
        try:
            return json.loads(proc.stdout) if proc.stdout.strip() else None
        except json.JSONDecodeError:
            raise AzError(f"az {_shown(args)}: output is not JSON\nstdout:\n{proc.stdout[-4000:]}\n"
                          f"stderr:\n{proc.stderr[-4000:]}") from None


def _shown(args: tuple[str, ...]) -> str:
    """The command line for messages, with secrets masked."""
    return " ".join("--password=***" if a.startswith("--password=") else a for a in args)


def field(obj: Any, *path: str) -> Any:
    """obj[path...] with case-insensitive keys (az prints SDK attribute names, e.g. keyVaultProperties
    for the wire's keyvaultproperties). Raises AssertionError naming the missing key."""
    for name in path:
        assert isinstance(obj, dict), f"expected an object holding {name!r}, got {obj!r}"
        matches = [v for k, v in obj.items() if k.lower() == name.lower()]
        assert matches, f"no {name!r} in {json.dumps(obj)[:2000]}"
        obj = matches[0]
    return obj


@pytest.fixture
def az(coffer, tmp_path) -> Az:
    binary = os.environ["COFFER_AZ"]
    assert Path(binary).is_file() and os.access(binary, os.X_OK), f"COFFER_AZ={binary} is not an executable file"
    return Az(binary, coffer, tmp_path)


def _download(az: Az, account: str, container: str, blob: str, dest: Path, check: bool = True
              ) -> subprocess.CompletedProcess:
    if dest.exists():
        dest.unlink()
    return az.run("storage", "blob", "download", "--auth-mode", "login", "--account-name", account,
                  "--container-name", container, "--name", blob, "--file", str(dest), check=check)


def test_customer_managed_key_flow_with_az_cli(az: Az, coffer, tmp_path: Path):
    # The signed-in principal: a fresh service principal, Owner of the subscription (no data actions).
    me = coffer.new_sp(unique("az-cli-"))
    coffer.assign_role(coffer.sub_scope(), "Owner", me.object_id)

    # ---- the cloud, from the server's ARM metadata document
    az.run("cloud", "register", "--name", CLOUD, "--endpoint-resource-manager", coffer.management)
    az.run("cloud", "set", "--name", CLOUD)
    cloud = az.json("cloud", "show", "--name", CLOUD)
    blob_suffix = coffer.blob_dns_suffix  # blob.<dns suffix>:<blob port>
    assert blob_suffix.startswith("blob.")
    assert field(cloud, "suffixes", "storageEndpoint") == blob_suffix[len("blob."):], cloud
    assert field(cloud, "suffixes", "keyvaultDns") == "." + coffer.vault_dns_suffix, cloud
    assert field(cloud, "endpoints", "resourceManager").rstrip("/") == coffer.management.rstrip("/"), cloud

    # ---- sign in
    subs = az.json("login", "--service-principal", "--username", me.client_id, f"--password={me.client_secret}",
                   "--tenant", coffer.tenant_id)
    assert coffer.subscription_id in [s["id"] for s in subs], subs
    az.run("account", "set", "--subscription", coffer.subscription_id)

    # ---- resource group, storage account with a system-assigned identity, vault, key
    rg = unique("rg-azcli-")
    group = az.json("group", "create", "--name", rg, "--location", LOCATION)
    assert field(group, "properties", "provisioningState") == "Succeeded", group

    account_name = "az" + unique("", 20)
    account = az.json("storage", "account", "create", "--resource-group", rg, "--name", account_name,
                      "--location", LOCATION, "--sku", "Standard_LRS", "--kind", "StorageV2", "--assign-identity")
    assert field(account, "provisioningState") == "Succeeded", account
    assert field(account, "identity", "type") == "SystemAssigned", account
    account_identity = field(account, "identity", "principalId")
    assert account_identity, account
    account_id = account["id"]

    vault_name = unique("kvaz", 16)
    vault = az.json("keyvault", "create", "--resource-group", rg, "--name", vault_name, "--location", LOCATION,
                    "--enable-purge-protection", "true", "--retention-days", "7")
    vault_id = vault["id"]
    vault_uri = field(vault, "properties", "vaultUri")
    assert field(vault, "properties", "enablePurgeProtection") is True, vault
    assert field(vault, "properties", "enableRbacAuthorization") is True, vault
    assert vault_uri.rstrip("/") == f"https://{vault_name}.{coffer.vault_dns_suffix}", vault

    # An Owner has no data actions: the CLI's principal needs a Key Vault data role to create the key.
    az.json("role", "assignment", "create", "--assignee-object-id", me.object_id,
            "--assignee-principal-type", "ServicePrincipal", "--role", "Key Vault Crypto Officer",
            "--scope", vault_id)
    key = az.json("keyvault", "key", "create", "--vault-name", vault_name, "--name", "cmk",
                  "--kty", "RSA", "--size", "2048")
    kid = field(key, "key", "kid")
    assert kid.startswith(f"{vault_uri.rstrip('/')}/keys/cmk/"), key
    key_version = kid.rsplit("/", 1)[1]
    assert key_version, key

    # ---- roles: the account's identity on the vault, the CLI's principal on the account's blobs
    assignment = az.json("role", "assignment", "create", "--assignee-object-id", account_identity,
                         "--assignee-principal-type", "ServicePrincipal",
                         "--role", "Key Vault Crypto Service Encryption User", "--scope", vault_id)
    assert field(assignment, "principalId") == account_identity, assignment
    assert field(assignment, "roleDefinitionId").lower().endswith("e147488a-f6f5-4113-8e2d-b22465e65bf6"), assignment
    az.json("role", "assignment", "create", "--assignee-object-id", me.object_id,
            "--assignee-principal-type", "ServicePrincipal", "--role", "Storage Blob Data Contributor",
            "--scope", account_id)

    # ---- switch the account to the customer-managed key
    updated = az.json("storage", "account", "update", "--resource-group", rg, "--name", account_name,
                      "--encryption-key-source", "Microsoft.Keyvault", "--encryption-key-vault", vault_uri,
                      "--encryption-key-name", "cmk")
    shown = az.json("storage", "account", "show", "--resource-group", rg, "--name", account_name)
    for doc in (updated, shown):
        assert field(doc, "encryption", "keySource") == "Microsoft.Keyvault", doc
        current = field(doc, "encryption", "keyVaultProperties", "currentVersionedKeyIdentifier")
        assert current.endswith("/keys/cmk/" + key_version), doc

    # ---- blobs with a bearer token (--auth-mode login), through {account}.blob.<suffix>
    container = "cmk"
    created = az.json("storage", "container", "create", "--auth-mode", "login", "--account-name", account_name,
                      "--name", container)
    assert created == {"created": True}, created
    payload = os.urandom(256 * 1024 + 17)
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    az.json("storage", "blob", "upload", "--auth-mode", "login", "--account-name", account_name,
            "--container-name", container, "--name", "secret.bin", "--file", str(source))
    dest = tmp_path / "download.bin"
    _download(az, account_name, container, "secret.bin", dest)
    assert dest.read_bytes() == payload, "downloaded bytes differ from the uploaded ones"

    # ---- disable the key: the blob can no longer be read
    disabled = az.json("keyvault", "key", "set-attributes", "--vault-name", vault_name, "--name", "cmk",
                       "--enabled", "false")
    assert field(disabled, "attributes", "enabled") is False, disabled
    failed = _download(az, account_name, container, "secret.bin", dest, check=False)
    assert failed.returncode != 0, f"download succeeded with the key disabled\nstdout:\n{failed.stdout[-2000:]}"
    output = failed.stdout + failed.stderr
    assert "KeyVaultEncryptionKeyNotFound" in output, (
        f"expected KeyVaultEncryptionKeyNotFound in the failed download's output:\n{output[-8000:]}")

    # ---- enable it again: the same bytes come back
    enabled = az.json("keyvault", "key", "set-attributes", "--vault-name", vault_name, "--name", "cmk",
                      "--enabled", "true")
    assert field(enabled, "attributes", "enabled") is True, enabled
    _download(az, account_name, container, "secret.bin", dest)
    assert dest.read_bytes() == payload, "downloaded bytes differ after the key was enabled again"

    # ---- an encryption scope under the same key (pinned to this version), with infrastructure
    # encryption; a blob written in it reads back, and is cut off with the key like the account
    scope = az.json("storage", "account", "encryption-scope", "create", "--resource-group", rg,
                    "--account-name", account_name, "--name", "pinned", "--key-source", "Microsoft.KeyVault",
                    "--key-uri", kid, "--require-infrastructure-encryption", "true")
    assert field(scope, "source") == "Microsoft.KeyVault", scope
    assert field(scope, "keyVaultProperties", "currentVersionedKeyIdentifier") == kid, scope
    assert field(scope, "requireInfrastructureEncryption") is True, scope
    az.json("storage", "blob", "upload", "--auth-mode", "login", "--account-name", account_name,
            "--container-name", container, "--name", "scoped.bin", "--file", str(source),
            "--encryption-scope", "pinned")
    _download(az, account_name, container, "scoped.bin", dest)
    assert dest.read_bytes() == payload, "the blob written in the scope reads back different bytes"
