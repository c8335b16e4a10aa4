"""The web console in a real browser: Playwright driving Debian's headless Chromium.

The seed's portal flow end to end (sign in, vault with purge protection, key, storage account
with a system-assigned identity, the role on the IAM page, the Encryption page, a blob, disable
and re-enable the key), the region error, a Reader's view and forged POSTs, the sign-in limit,
and no request leaving the machine. Screenshots go to target/console-screenshots/.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest

from harness import REPO_ROOT, Coffer, unique

playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect

CHROMIUM = os.environ.get("COFFER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = REPO_ROOT / "target" / "console-screenshots"
PASSWORD = "Console-Test-Password-1"

# Visible form controls with neither an associated <label> nor aria-label, and buttons and links
# with no text: what a screen reader (and get_by_label / get_by_role) could not name.
UNNAMED_CONTROLS = """() => {
  const out = [];
  for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea, progress')) {
    const named = (el.labels && el.labels.length) || el.getAttribute('aria-label') || el.closest('label');
    if (!named) out.push(el.outerHTML.slice(0, 120));
  }
  for (const el of document.querySelectorAll('button, a[href]')) {
    if (!(el.textContent.trim() || el.getAttribute('aria-label'))) out.push(el.outerHTML.slice(0, 120));
  }
  return out;
}"""


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM} (scripts/test.sh installs Debian's chromium)")
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        yield b
        b.close()


class Console:
    """A browser context signed in (or not) to one server, recording every request it makes."""

    def __init__(self, coffer: Coffer, browser, name: str):
        self.coffer = coffer
        self.origin = coffer.management.rstrip("/")
        self.ctx = browser.new_context(ignore_https_errors=True, accept_downloads=True)
        self.requests: list[str] = []
        self.ctx.on("request", lambda r: self.requests.append(r.url))
        self.page = self.ctx.new_page()
        self.page.set_default_timeout(20_000)
        self.name = name

    def go(self, path: str):
        return self.page.goto(self.origin + path)

    def sign_in(self, username: str, password: str):
        self.go("/console")
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Sign in").click()

    def nav(self, name: str):
        self.page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True).click()

    def shot(self, name: str):
        """Save a screenshot, after checking every control on the page has an accessible name."""
        unnamed = self.page.evaluate(UNNAMED_CONTROLS)
        assert not unnamed, f"controls without a label or accessible name on {self.page.url}: {unnamed}"
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{self.name}-{name}.png"), full_page=True)

    def csrf(self) -> str:
        return self.page.locator('input[name="csrf"]').first.get_attribute("value")

    def all_local(self):
        outside = [u for u in self.requests
                   if not (u.startswith(self.origin + "/") or u.startswith("data:") or u.startswith("about:"))]
        assert not outside, f"requests left the console's origin: {outside}"
        assert self.requests, "no request recorded"

    def close(self):
        self.ctx.close()


def new_user(coffer: Coffer, role: str | None) -> tuple[str, str]:
    """A console user with `role` at the subscription (None: no role)."""
    username = unique("user-")
    r = coffer.arm("POST", "/coffer/admin/users", json={"username": username, "password": PASSWORD})
    assert r.status_code == 201, r.text
    oid = r.json()["object_id"]
    if role:
        coffer.assign_role(f"/subscriptions/{coffer.subscription_id}", role, oid)
    return username, oid


@pytest.fixture
def owner(coffer, browser):
    username, oid = new_user(coffer, "Owner")
    c = Console(coffer, browser, "owner")
    c.oid = oid
    c.sign_in(username, PASSWORD)
    expect(c.page.get_by_role("heading", name="Overview")).to_be_visible()
    yield c
    c.close()


def create_vault(c: Console, rg: str, region: str) -> str:
    name = unique("kv-")[:20]
    c.nav("Key vaults")
    c.page.get_by_label("Key vault name").fill(name)
    c.page.get_by_label("Resource group").fill(rg)
    c.page.get_by_label("Region").select_option(region)
    c.page.get_by_label("Enable purge protection").check()
    c.page.get_by_role("button", name="Create").click()
    expect(c.page.get_by_role("heading", name=f"Key vault {name}")).to_be_visible()
    return name


def generate_key(c: Console) -> str:
    name = unique("cmk-")
    c.page.get_by_label("Name", exact=True).first.fill(name)
    c.page.get_by_label("Key type").select_option("RSA")
    c.page.get_by_label("RSA key size").select_option("2048")
    c.page.get_by_role("button", name="Generate").click()
    expect(c.page.get_by_role("heading", name=f"Key {name}")).to_be_visible()
    return name


def create_account(c: Console, rg: str, region: str) -> str:
    name = unique("sa", 14).replace("-", "").lower()[:20]
    c.nav("Storage accounts")
    c.page.get_by_label("Storage account name").fill(name)
    c.page.get_by_label("Resource group").fill(rg)
    c.page.get_by_label("Region").select_option(region)
    expect(c.page.get_by_label("System-assigned managed identity")).to_be_checked()
    c.page.get_by_role("button", name="Create").click()
    expect(c.page.get_by_role("heading", name=f"Storage account {name}")).to_be_visible()
    return name


def test_portal_flow_customer_managed_key(coffer, owner):
    c = owner
    page = c.page
    rg = unique("rg-console-")
    c.shot("overview")
    vault = create_vault(c, rg, "eastus")
    c.shot("key-vault")
    key = generate_key(c)
    key_url = page.url
    c.shot("key")
    account = create_account(c, rg, "eastus")
    account_url = page.url

    # Grant the account's identity the role on the vault, on the IAM page.
    c.nav("Access control (IAM)")
    page.get_by_label("Scope").select_option(label=f"Key vault {vault}")
    page.get_by_role("button", name="Show").click()
    page.get_by_label("Role", exact=True).select_option(label="Key Vault Crypto Service Encryption User")
    page.get_by_label("Member").select_option(label=f"{account} (storage account, system-assigned identity)")
    page.get_by_role("button", name="Assign").click()
    expect(page.get_by_role("status")).to_have_text("Role assignments updated.")
    expect(page.get_by_role("table", name="Role assignments")).to_contain_text("Key Vault Crypto Service Encryption User")
    c.shot("iam")

    # The seed's Encryption page.
    page.goto(account_url)
    page.get_by_role("link", name="Encryption").click()
    page.get_by_label("Customer-managed keys").check()
    page.get_by_label("Select from key vault").check()
    page.get_by_label("Key vault", exact=True).select_option(label=f"{vault} (eastus)")
    expect(page.get_by_label("Key", exact=True).locator(f'option[value="{key}"]')).to_have_count(1)
    page.get_by_label("Key", exact=True).select_option(key)
    expect(page.get_by_label("Version")).to_have_value("")  # automatic updates
    page.get_by_label("System-assigned").check()
    c.shot("encryption-filled")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Encryption settings saved.")
    expect(page.locator("#encryption-type")).to_have_text("Customer-managed keys")
    expect(page.locator("#cmk-status")).to_have_text("Healthy")
    assert len(page.locator("#key-version").inner_text()) == 32
    c.shot("encryption-saved")

    # A blob uploaded in the browser.
    page.goto(account_url)
    page.get_by_label("Container name").fill("docs")
    page.get_by_role("button", name="Create container").click()
    page.get_by_role("link", name="docs", exact=True).click()
    data = os.urandom(300_000)
    page.get_by_label("File").set_input_files(files=[{"name": "report.bin", "mimeType": "application/octet-stream", "buffer": data}])
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("table", name="Blobs")).to_contain_text("report.bin")
    expect(page.get_by_role("table", name="Blobs")).to_contain_text("300000")
    c.shot("container")
    download = page.get_by_role("link", name="Download report.bin").get_attribute("href")
    r = page.request.get(c.origin + download)
    assert r.status == 200 and hashlib.sha256(r.body()).digest() == hashlib.sha256(data).digest()

    # Disable the key on its page: the dependent account is listed first.
    page.goto(key_url)
    expect(page.get_by_role("table", name="Dependent storage accounts")).to_contain_text(account)
    page.get_by_role("button", name="Disable").click()
    expect(page.get_by_role("heading", name=f"Disable key {key}?")).to_be_visible()
    expect(page.get_by_role("table", name="Dependent storage accounts")).to_contain_text(account)
    c.shot("disable-confirm")
    page.get_by_role("button", name="Confirm disable").click()
    expect(page.locator("#key-status")).to_have_text("Disabled")

    # The download fails at once (the in-process vault publishes the change)...
    r = page.request.get(c.origin + download)
    assert r.status == 403, r.status
    assert "KeyVaultEncryptionKeyNotFound" in r.text()
    # ...and the account's status shows why (set by that failed unwrap at the latest; the
    # background watcher may have set it before).
    page.goto(account_url)
    expect(page.locator("#cmk-status")).to_have_text("KeyDisabled")
    c.shot("account-key-disabled")

    # Re-enable: the same bytes come back.
    page.goto(key_url)
    page.get_by_role("button", name="Enable").click()
    expect(page.locator("#key-status")).to_have_text("Enabled")
    r = page.request.get(c.origin + download)
    assert r.status == 200 and r.body() == data
    page.goto(account_url)
    expect(page.locator("#cmk-status")).to_have_text("Healthy")

    c.nav("Overview")
    expect(page.get_by_role("table", name="Storage account encryption")).to_contain_text(account)
    c.all_local()

    # Every change was made as the signed-in user, through the APIs, and audited as such.
    recs = coffer.arm("GET", f"/coffer/admin/audit?caller={c.oid}&top=1000").json()["value"]
    ops = {r["operationName"] for r in recs if r["resultType"] == "Success"}
    assert {"KeyCreate", "KeyUpdate"} <= ops, ops
    assert all(r["callerIpAddress"] == "127.0.0.1" for r in recs if r["operationName"] == "KeyUpdate")
    assert any(r["resourceId"].lower().endswith(f"/storageaccounts/{account}") for r in recs)


def test_user_assigned_identity_and_keys_nearing_expiry(coffer, owner):
    import datetime

    c = owner
    page = c.page
    rg = unique("rg-console-")
    vault = create_vault(c, rg, "eastus")
    # A key that expires in ten days shows on the Overview.
    name = unique("soon-")
    soon = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=10)).strftime("%Y-%m-%dT%H:%M")
    page.get_by_label("Name", exact=True).first.fill(name)
    page.get_by_label("Expiration date").fill(soon)
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_role("heading", name=f"Key {name}")).to_be_visible()
    c.nav("Overview")
    expect(page.get_by_role("table", name="Keys nearing expiry")).to_contain_text(name)
    c.shot("overview-expiring")

    # A user-assigned identity, granted on the vault, chosen at creation and on the Encryption page.
    ident = coffer.create_identity(rg)
    vault_id = f"/subscriptions/{coffer.subscription_id}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{vault}"
    coffer.assign_role(vault_id, "Key Vault Crypto Service Encryption User", ident.principal_id)
    page.goto(f"{c.origin}/console/vault?id={quote(vault_id, safe='')}")
    key = generate_key(c)
    account = unique("sa", 14).replace("-", "").lower()[:20]
    c.nav("Storage accounts")
    page.get_by_label("Storage account name").fill(account)
    page.get_by_label("Resource group").fill(rg)
    page.get_by_label("System-assigned managed identity").uncheck()
    page.get_by_label("User-assigned managed identity").select_option(label=ident.name)
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name=f"Storage account {account}")).to_be_visible()
    page.get_by_role("link", name="Encryption").click()
    page.get_by_label("Customer-managed keys").check()
    page.get_by_label("Key vault", exact=True).select_option(label=f"{vault} (eastus)")
    expect(page.get_by_label("Key", exact=True).locator(f'option[value="{key}"]')).to_have_count(1)
    page.get_by_label("Key", exact=True).select_option(key)
    page.get_by_label("User-assigned", exact=True).check()
    page.get_by_label("User-assigned identity").select_option(label=ident.name)
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Encryption settings saved.")
    expect(page.locator("#cmk-status")).to_have_text("Healthy")
    got = coffer.mgmt_clients().storage.storage_accounts.get_properties(rg, account)
    assert got.encryption.key_source == "Microsoft.Keyvault"
    assert got.encryption.encryption_identity.encryption_user_assigned_identity.lower() == ident.id.lower()
    c.all_local()


def test_administrator_pages_audit_and_monitoring(coffer, browser, owner):
    # Some vault traffic to look at: a key made through the console by an Owner.
    rg = unique("rg-console-")
    create_vault(owner, rg, "eastus")
    key = generate_key(owner)
    c = Console(coffer, browser, "admin")
    try:
        c.sign_in(coffer.admin["username"], coffer.admin["password"])
        page = c.page
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        expect(page.get_by_role("table", name="Recent denials")).to_be_visible()
        c.shot("overview")
        c.nav("Audit log")
        page.get_by_label("Operation").fill("KeyCreate")
        page.get_by_role("button", name="Apply").click()
        expect(page.get_by_role("table", name="Audit records")).to_contain_text("KeyCreate")
        page.get_by_role("button", name="Verify chain").click()
        expect(page.get_by_role("status")).to_contain_text("The audit log is intact")
        c.shot("audit-log")
        c.nav("Monitoring")
        for chart in ("Vault operations", "Unwrap calls", "Vault latency (mean)", "Denials"):
            expect(page.get_by_role("img", name=chart)).to_be_visible()
        c.shot("monitoring")
        c.all_local()
    finally:
        c.close()
    assert key


def test_key_uri_in_another_region_shows_the_error_and_saves_nothing(coffer, owner):
    c = owner
    page = c.page
    rg = unique("rg-console-")
    vault = create_vault(c, rg, "westeurope")
    generate_key(c)
    kid = page.locator("dl.props dd").first.inner_text()
    account = create_account(c, rg, "eastus")
    page.get_by_role("link", name="Encryption").click()
    page.get_by_label("Customer-managed keys").check()
    page.get_by_label("Enter key URI").check()
    page.get_by_label("Key URI", exact=True).fill(kid.rsplit("/", 1)[0])
    page.get_by_role("button", name="Save").click()
    # First what is missing: the identity's permission, and how to fix it.
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("KeyVaultAccessDenied")
    expect(alert).to_contain_text("Grant it the role 'Key Vault Crypto Service Encryption User'")
    c.shot("permission-error")
    props = coffer.mgmt_clients().storage.storage_accounts.get_properties(rg, account)
    vault_id = f"/subscriptions/{coffer.subscription_id}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{vault}"
    coffer.assign_role(vault_id, "Key Vault Crypto Service Encryption User", props.identity.principal_id)
    # With the permission, the region rule.
    page.get_by_label("Customer-managed keys").check()
    page.get_by_label("Enter key URI").check()
    page.get_by_label("Key URI", exact=True).fill(kid.rsplit("/", 1)[0])
    page.get_by_role("button", name="Save").click()
    expect(alert).to_contain_text("region")
    expect(alert).to_contain_text("westeurope")
    c.shot("region-error")
    expect(page.locator("#encryption-type")).to_have_text("Microsoft-managed keys")
    got = coffer.mgmt_clients().storage.storage_accounts.get_properties(rg, account)
    assert got.encryption.key_source == "Microsoft.Storage"
    c.all_local()


def test_reader_sees_no_save_and_forged_posts_are_refused(coffer, browser, owner):
    rg = unique("rg-console-")
    account = create_account(owner, rg, "eastus")
    account_id = f"/subscriptions/{coffer.subscription_id}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{account}"
    username, _ = new_user(coffer, "Reader")
    c = Console(coffer, browser, "reader")
    try:
        c.sign_in(username, PASSWORD)
        c.go(f"/console/account/encryption?id={quote(account_id, safe='')}")
        expect(c.page.get_by_role("heading", name=f"Encryption — {account}")).to_be_visible()
        expect(c.page.get_by_role("button", name="Save")).to_be_disabled()
        c.shot("reader-encryption")
        form = {"id": account_id, "keySource": "Microsoft.Keyvault", "method": "uri",
                "keyUri": "https://x.vault.example/keys/k", "identityType": "SystemAssigned"}
        # No CSRF token: refused before anything happens.
        r = c.page.request.post(c.origin + "/console/account/encryption", form=form)
        assert r.status == 403 and "CSRF" in r.text()
        # A wrong one too.
        r = c.page.request.post(c.origin + "/console/account/encryption", form={**form, "csrf": "forged"})
        assert r.status == 403 and "CSRF" in r.text()
        # The right token, but a Reader: the management API refuses it.
        r = c.page.request.post(c.origin + "/console/account/encryption", form={**form, "csrf": c.csrf()})
        assert r.status == 403 and "AuthorizationFailed" in r.text()
        # Another site's form, even with the token: refused by the Origin check.
        r = c.page.request.post(c.origin + "/console/account/encryption",
                                form={**form, "csrf": c.csrf()}, headers={"Origin": "https://evil.example"})
        assert r.status == 403 and "CSRF" in r.text()
        got = coffer.mgmt_clients().storage.storage_accounts.get_properties(rg, account)
        assert got.encryption.key_source == "Microsoft.Storage"
        c.all_local()
    finally:
        c.close()


def test_sign_in_cookie_errors_and_lockout(coffer, browser):
    username, _ = new_user(coffer, None)
    c = Console(coffer, browser, "signin")
    try:
        c.go("/console/overview")
        expect(c.page.get_by_role("button", name="Sign in")).to_be_visible()
        c.shot("signin")
        c.sign_in(username, "wrong-password")
        expect(c.page.get_by_role("alert")).to_have_text("The user name or password is incorrect.")
        # A sign-in POST without the form's token is refused.
        r = c.page.request.post(c.origin + "/console/signin", form={"username": username, "password": PASSWORD})
        assert r.status == 403
        for _ in range(4):
            c.sign_in(username, "wrong-password")
        # Locked now, even with the right password.
        c.sign_in(username, PASSWORD)
        expect(c.page.get_by_role("alert")).to_contain_text("Too many failed sign-in attempts")

        # Another user signs in; the session cookie is locked down.
        other, _ = new_user(coffer, None)
        c.sign_in(other, PASSWORD)
        expect(c.page.get_by_role("heading", name="Overview")).to_be_visible()
        cookie = next(k for k in c.ctx.cookies() if k["name"] == "__Host-coffer-session")
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
        r = c.page.request.get(c.origin + "/console/overview")
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        c.page.get_by_role("button", name="Sign out").click()
        expect(c.page.get_by_role("button", name="Sign in")).to_be_visible()
        r = c.page.request.get(c.origin + "/console/overview", max_redirects=0)
        assert r.status in (302, 303, 307) and r.headers["location"].endswith("/console/signin")
        # Sign-ins are audited, failures included.
        recs = coffer.arm("GET", f"/coffer/admin/audit?operation=ConsoleSignIn&caller={username}&top=50").json()["value"]
        assert [x["resultSignature"] for x in recs][:5] == [401] * 5
        assert 429 in [x["resultSignature"] for x in recs]
        c.all_local()
    finally:
        c.close()


def test_key_lifecycle_import_pem_delete_recover_purge_and_data_pages(coffer, owner, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    c = owner
    page = c.page
    rg = unique("rg-console-")
    name = unique("kv-")[:20]
    c.nav("Key vaults")
    page.get_by_label("Key vault name").fill(name)
    page.get_by_label("Resource group").fill(rg)
    page.get_by_label("Days to retain deleted vaults").fill("7")
    page.get_by_role("button", name="Create").click()  # no purge protection: purge is allowed
    expect(page.get_by_role("heading", name=f"Key vault {name}")).to_be_visible()
    vault_url = page.url

    # Import a PEM key (PKCS#8 EC P-256).
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    key = unique("imported-")
    page.get_by_label("Name", exact=True).nth(1).fill(key)
    page.get_by_label("Key (JWK or PEM)").fill(pem)
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_role("heading", name=f"Key {key}")).to_be_visible()
    expect(page.locator("dl.props")).to_contain_text("EC")
    # A bad PEM is an inline error, not a crash.
    page.goto(vault_url)
    page.get_by_label("Name", exact=True).nth(1).fill(unique("bad-"))
    page.get_by_label("Key (JWK or PEM)").fill("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_role("alert")).to_contain_text("The PEM key could not be read")

    # Expiry, rotation now and a rotation policy.
    page.goto(vault_url)
    page.get_by_role("link", name=key).click()
    page.get_by_label("Expiration date").fill("2031-01-01T00:00")
    page.get_by_role("button", name="Save dates").click()
    expect(page.get_by_role("status")).to_have_text("Dates saved.")
    expect(page.locator("dl.props")).to_contain_text("2031-01-01T00:00:00Z")
    page.get_by_role("button", name="Rotate now").click()
    expect(page.get_by_role("status")).to_have_text("A new version was created.")
    expect(page.get_by_role("table", name="Versions").locator("tbody tr")).to_have_count(2)
    page.get_by_label("Rotate automatically after (days since creation)").fill("90")
    page.get_by_label("Set expiration time of new versions to (days)").fill("365")
    page.get_by_role("button", name="Save rotation policy").click()
    expect(page.get_by_role("status")).to_have_text("Rotation policy saved.")
    expect(page.get_by_label("Rotate automatically after (days since creation)")).to_have_value("90")

    # Delete (confirmed), recover, delete again, purge.
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name=f"Delete key {key}?")).to_be_visible()
    page.get_by_role("button", name="Confirm delete").click()
    expect(page.get_by_role("table", name="Deleted keys")).to_contain_text(key)
    page.get_by_role("button", name=f"Recover {key}").click()
    expect(page.get_by_role("status")).to_contain_text("recover done")
    expect(page.get_by_role("table", name="Keys")).to_contain_text(key)
    page.get_by_role("link", name=key).click()
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("button", name="Confirm delete").click()
    page.get_by_role("button", name=f"Purge {key}").click()
    expect(page.get_by_role("status")).to_contain_text("purge done")
    expect(page.get_by_role("table", name="Keys")).not_to_contain_text(key)

    # Blobs: upload two, delete one; role assignments: add and remove.
    account = create_account(c, rg, "eastus")
    account_url = page.url
    page.get_by_label("Container name").fill("box")
    page.get_by_role("button", name="Create container").click()
    page.get_by_role("link", name="box", exact=True).click()
    for n in ("a.txt", "dir/b.txt"):
        page.get_by_label("File").set_input_files(files=[{"name": "x.txt", "mimeType": "text/plain", "buffer": n.encode()}])
        page.get_by_label("Blob name").fill(n)
        page.get_by_role("button", name="Upload").click()
        expect(page.get_by_role("table", name="Blobs")).to_contain_text(n)
    page.get_by_role("button", name="Delete a.txt").click()
    expect(page.get_by_role("status")).to_have_text("Deleted a.txt.")
    expect(page.get_by_role("table", name="Blobs")).not_to_contain_text("a.txt")
    r = page.request.get(c.origin + page.get_by_role("link", name="Download dir/b.txt").get_attribute("href"))
    assert r.status == 200 and r.body() == b"dir/b.txt"
    assert 'filename="b.txt"' in r.headers["content-disposition"]

    page.goto(account_url)
    page.get_by_role("button", name="Delete container box").click()
    expect(page.get_by_role("table", name="Containers")).not_to_contain_text("box")

    c.nav("Access control (IAM)")
    page.get_by_label("Scope").select_option(label=f"Storage account {account}")
    page.get_by_role("button", name="Show").click()
    page.get_by_label("Role", exact=True).select_option(label="Reader")
    page.get_by_label("Member").select_option(label=f"{account} (storage account, system-assigned identity)")
    page.get_by_role("button", name="Assign").click()
    rows = page.get_by_role("table", name="Role assignments").locator("tbody tr", has_text="Reader").filter(has_text=account)
    expect(rows).to_have_count(1)
    rows.get_by_role("button", name="Remove").click()
    expect(page.get_by_role("status")).to_have_text("Role assignments updated.")
    expect(page.get_by_role("table", name="Role assignments").locator("tbody tr", has_text="Reader").filter(has_text=account)).to_have_count(0)
    c.all_local()


def test_console_is_not_served_on_vault_hosts(coffer):
    host = f"anyvault.{coffer.endpoints['vault_dns_suffix']}"
    with coffer.http() as s:
        r = s.get(coffer.management + "/console/signin", headers={"Host": host}, timeout=30)
        assert r.status_code != 200 and "Sign in" not in r.text
        r = s.get(coffer.management + "/console/signin", timeout=30)
        assert r.status_code == 200 and "Sign in" in r.text


def test_blob_content_never_runs_as_a_page_of_the_console_host(coffer, browser, rg):
    """The blob listener shares the console's host (another port; cookies ignore ports): a
    stored HTML blob opened in a browser must not run script there (sandboxed, no sniffing)."""
    from datetime import datetime, timedelta, timezone

    from azure.mgmt.storage import models as sm
    from azure.storage.blob import BlobSasPermissions, ContentSettings, generate_blob_sas
    from test_blob_basic import _account_name, _client, _storage

    name = _account_name()
    st = _storage(coffer)
    st.storage_accounts.begin_create(rg, name, sm.StorageAccountCreateParameters(
        sku=sm.Sku(name="Standard_LRS"), kind="StorageV2", location="eastus")).result()
    acct = {"name": name, "key": st.storage_accounts.list_keys(rg, name)["keys"][0].value}
    cc = _client(coffer, acct).create_container("web")
    html = b"<html><head><title>before</title></head><body><script>document.title='ran';document.cookie='__Host-coffer-signin=x; Path=/; Secure'</script></body></html>"
    cc.upload_blob("evil.html", html, content_settings=ContentSettings(content_type="text/html"))
    sas = generate_blob_sas(acct["name"], "web", "evil.html", account_key=acct["key"],
                            permission=BlobSasPermissions(read=True),
                            expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    url = f"{coffer.endpoints['blob']}/{acct['name']}/web/evil.html?{sas}"
    ctx = browser.new_context(ignore_https_errors=True)
    try:
        page = ctx.new_page()
        r = page.goto(url)
        assert r.status == 200
        assert "sandbox" in r.headers["content-security-policy"] and r.headers["x-content-type-options"] == "nosniff"
        assert page.title() == "before"
        assert not [k for k in ctx.cookies() if k["name"].startswith("__Host-coffer")]
    finally:
        ctx.close()


def test_long_lists_are_followed_past_the_first_page(coffer, owner):
    c = owner
    page = c.page
    rg = unique("rg-console-")
    vault = create_vault(c, rg, "eastus")
    vault_id = f"/subscriptions/{coffer.subscription_id}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{vault}"
    sp = coffer.new_sp()
    coffer.assign_role(vault_id, "Key Vault Crypto Officer", sp.object_id)
    kv = coffer.key_client(f"https://{vault}.{coffer.endpoints['vault_dns_suffix']}/",
                           coffer.credential(sp.client_id, sp.client_secret))
    names = [f"k{i:02d}" for i in range(30)]  # Key Vault pages hold 25
    for n in names:
        kv.create_ec_key(n)
    page.reload()
    rows = page.get_by_role("table", name="Keys").locator("tbody tr")
    expect(rows).to_have_count(30)
    expect(page.get_by_role("table", name="Keys")).to_contain_text("k29")
