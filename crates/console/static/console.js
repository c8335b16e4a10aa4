// Coffer console: progressive enhancement only (every page renders without it).
"use strict";

function show(el, on) { if (el) { el.hidden = !on; } }

function encryptionPage() {
  const form = document.getElementById("encryption-form");
  if (!form) { return; }
  const kv = document.getElementById("kv-select");
  const key = document.getElementById("key-select");
  const version = document.getElementById("version-select");
  let keys = [];
  function sync() {
    const cmk = form.querySelector('input[name="keySource"]:checked');
    const method = form.querySelector('input[name="method"]:checked');
    show(document.getElementById("cmk-fields"), cmk && cmk.value === "Microsoft.Keyvault");
    show(document.getElementById("select-from-vault"), method && method.value === "vault");
    show(document.getElementById("enter-key-uri"), method && method.value === "uri");
  }
  function fill(select, first, values) {
    select.replaceChildren();
    const o = document.createElement("option");
    o.value = ""; o.textContent = first; select.appendChild(o);
    for (const v of values) {
      const x = document.createElement("option");
      x.value = v; x.textContent = v; select.appendChild(x);
    }
  }
  async function loadKeys() {
    fill(key, "Loading keys…", []);
    fill(version, "Automatic updates (latest version)", []);
    keys = [];
    if (kv.value) {
      const r = await fetch("/console/api/keys?vault=" + encodeURIComponent(kv.value), { credentials: "same-origin" });
      if (r.ok) { keys = (await r.json()).keys || []; }
    }
    fill(key, keys.length ? "Select a key" : "No keys you can read", keys.map(k => k.name));
  }
  function loadVersions() {
    const k = keys.find(x => x.name === key.value);
    fill(version, "Automatic updates (latest version)", k ? k.versions : []);
  }
  kv.addEventListener("change", loadKeys);
  key.addEventListener("change", loadVersions);
  // The key in use, preselected.
  if (kv.value) {
    loadKeys().then(() => {
      key.value = form.dataset.key || "";
      loadVersions();
      version.value = form.dataset.version || "";
    });
  }
  form.addEventListener("change", sync);
  sync();
}

function uploadForm() {
  const form = document.getElementById("upload-form");
  if (!form) { return; }
  const file = document.getElementById("upload-file");
  const name = document.getElementById("upload-name");
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const f = file.files[0];
    if (!f) { return; }
    const blob = name.value.trim() || f.name;
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.dataset.action + "&name=" + encodeURIComponent(blob));
    xhr.setRequestHeader("X-CSRF-Token", form.dataset.csrf);
    xhr.upload.addEventListener("progress", (ev) => {
      if (ev.lengthComputable) { bar.value = Math.round(100 * ev.loaded / ev.total); }
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        bar.value = 100;
        status.textContent = "Uploaded " + blob + ".";
        window.location.reload();
      } else {
        status.textContent = "Upload failed: " + xhr.responseText;
      }
    });
    xhr.addEventListener("error", () => { status.textContent = "Upload failed: the connection was lost."; });
    status.textContent = "Uploading " + blob + "…";
    xhr.send(f);
  });
}

document.addEventListener("DOMContentLoaded", () => { encryptionPage(); uploadForm(); });
