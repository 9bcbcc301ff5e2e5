"""``VERIFY.md``: how a person checks an evidence bundle by hand, with standard tools.

Every shell block in it is meant to be run as written, from the bag's folder, with
bash; the tests run each block of a real bundle and require it to succeed, and each
to fail on a tampered copy. A block fails visibly: its exit status is non-zero when any
part fails, not only the last iteration of a loop. Loops over captures count their
failures and end with "N of M ... failed" and that status, rather than ``set -e`` or
``exit``, which would close the interactive shell a reader pasted the block into.
Values (key ids, file names, genTime) are filled in for the bundle at hand, so nothing
needs editing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from chain_of_custody.bundle.layout import (
    CHECKPOINT_FILE,
    SIGNED_TAG_MANIFEST,
    TAG_SIGNATURE_FILE,
    key_path,
    token_paths,
)

_FOLD = '''python3 - <<'EOF'
import base64, glob, hashlib, json
note = open("data/custody/checkpoint.note", encoding="utf-8").read().split("\\n")
size, root = int(note[1]), base64.b64decode(note[2])
def sha256(data): return hashlib.sha256(data).digest()
proofs = sorted(glob.glob("data/custody/proofs/*.json"))
for path in proofs:
    proof = json.load(open(path))
    seq = proof["seq"]
    leaf = open(f"data/custody/entries/{seq}.json", "rb").read()
    node, fn, sn = sha256(b"\\x00" + leaf), seq, size - 1      # RFC 9162, 2.1.3.2
    for sibling in map(bytes.fromhex, proof["inclusion_proof"]):
        if fn & 1 or fn == sn:
            node = sha256(b"\\x01" + sibling + node)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            node = sha256(b"\\x01" + node + sibling)
        fn, sn = fn >> 1, sn >> 1
    assert sn == 0 and node == root, f"entry {seq}: its proof does NOT lead to the signed root"
print(f"all {len(proofs)} entries are in the signed checkpoint of {size} entries")
EOF'''

_ARTIFACTS = '''failed=0 total=0
for dir in data/captures/*/; do
  total=$((total + 1))
  python3 - "$dir" <<'EOF' || failed=$((failed + 1))
import hashlib, json, os, sys
def shown(v): return ascii(str(v))[1:-1][:200]  # untrusted text, escaped and cut
folder = sys.argv[1]
manifest = json.load(open(os.path.join(folder, "manifest.json"), encoding="utf-8"))
for a in manifest["artifacts"]:
    data = hashlib.sha256(), hashlib.sha512()
    size = 0
    with open(os.path.join(folder, a["name"]), "rb") as f:
        while chunk := f.read(1 << 20):
            data[0].update(chunk); data[1].update(chunk); size += len(chunk)
    assert (size, data[0].hexdigest(), data[1].hexdigest()) == \\
        (a["size"], a["sha256"], a["sha512"]), \
        f"{shown(folder)}{shown(a['name'])} differs from the manifest"
    print(f"ok  {shown(folder)}{shown(a['name'])}  {shown(a['role'])}  {size} bytes")
print(f"ok  {shown(folder)}: case {shown(manifest['requested']['case'])}, requested by "
      f"{shown(manifest['requested']['by'])} at {shown(manifest['requested']['at'])}")
EOF
done
echo "$failed of $total captures failed"; [ "$failed" -eq 0 ]'''

_MANIFEST_SIGNATURES = '''failed=0 total=0
for dir in data/captures/*/; do
  total=$((total + 1))
  key=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["signer"]["key_id"])' \\
        "$dir/manifest.json")
  LC_ALL=C printf '%q: signed by key %q\\n' "$dir" "$key"
  case "$dir$key" in *[!A-Za-z0-9._/-]*)  # no bundle of ours names a folder or key so
    echo "FAIL: a folder or key id with characters no honest bundle has"
    failed=$((failed + 1)); continue;; esac
  openssl pkeyutl -verify -pubin -inkey "data/keys/$key.pem" -rawin \\
      -in "$dir/manifest.json" -sigfile "$dir/manifest.sig" || failed=$((failed + 1))
done
echo "$failed of $total capture signatures failed"; [ "$failed" -eq 0 ]'''

_ON_LEDGER = '''failed=0 total=0
for dir in data/captures/*/; do
  total=$((total + 1))
  python3 - "$dir" <<'EOF' || failed=$((failed + 1))
import glob, hashlib, json, os, sys
def shown(v): return ascii(str(v))[1:-1][:200]  # untrusted text, escaped and cut
folder = sys.argv[1]
capture = os.path.basename(os.path.normpath(folder))
digest = hashlib.sha256(open(os.path.join(folder, "manifest.json"), "rb").read()).hexdigest()
found = 0
for path in glob.glob("data/custody/entries/*.json"):
    entry = json.load(open(path, encoding="utf-8"))
    if entry["action"] != "capture.completed" or \\
            (entry.get("payload") or {}).get("manifest_sha256") != digest:
        continue
    assert entry["subject"] == f"capture:{capture}", \\
        f"{path} names the manifest of {shown(folder)} but records '{shown(entry['subject'])}'"
    print(f"ok  {path} records capture {shown(capture)} (completed {shown(entry['time'])})")
    found += 1
assert found, f"{shown(folder)}: NO capture.completed entry names its manifest (sha256 {digest})"
EOF
done
echo "$failed of $total captures failed"; [ "$failed" -eq 0 ]'''

_WARCS = '''failed=0 total=0
for dir in data/captures/*/; do
  while read -r warc; do
    total=$((total + 1))
    warcio check -v "$warc" </dev/null \\
      || { LC_ALL=C printf 'FAIL %q\\n' "$warc"; failed=$((failed + 1)); }
  done < <(python3 -c 'import json, sys; [print(sys.argv[1] + a["name"]) for a in
    json.load(open(sys.argv[1] + "manifest.json"))["artifacts"] if a["role"] == "warc"]' "$dir")
done
echo "$failed of $total WARC files failed"; [ "$failed" -eq 0 ]'''


# A revisit record stands for an earlier record of the same WARC (WARC-Refers-To) and
# claims its payload digest; warcio checks neither, so this does, with the standard library.
_REVISITS = '''python3 - data/captures/*/manifest.json <<'EOF'
import gzip, json, os, sys
def shown(value):  # a header value of the WARC, escaped and cut: it is not to be trusted
    return ascii(str(value)[:200])[1:-1]
failed = total = 0
for manifest in sys.argv[1:]:
    folder = os.path.dirname(manifest)
    for a in json.load(open(manifest, encoding="utf-8"))["artifacts"]:
        if a["role"] != "warc":
            continue
        path = os.path.join(folder, a["name"])
        digests, revisits = {}, []
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as warc:
            while line := warc.readline():
                if not line.strip():
                    continue
                headers = {}
                while (line := warc.readline()).strip():
                    name, _, value = line.decode("utf-8", "replace").partition(":")
                    headers[name.strip().lower()] = value.strip()
                warc.read(int(headers["content-length"]))
                rid, digest = headers.get("warc-record-id"), headers.get("warc-payload-digest")
                digests[rid] = digest
                if headers.get("warc-type") == "revisit":
                    revisits.append((rid, headers.get("warc-refers-to"), digest))
        for rid, target, digest in revisits:
            total += 1
            if target not in digests:
                failed += 1
                print(f"FAIL {path}: revisit {shown(rid)} refers to {shown(target)}, "
                      "not a record of it")
            elif digest is None or digests[target] != digest:
                failed += 1
                print(f"FAIL {path}: revisit {shown(rid)} does not carry the payload "
                      f"digest of {shown(target)}")
        print(f"{path}: {len(revisits)} revisits checked")
print(f"{failed} of {total} revisits failed")
sys.exit(1 if failed else 0)
EOF'''

# Every file (or link, or other non-directory) of the bag against what the manifests list;
# bagit.py and the sums above would pass a file planted outside data/.
_LISTED = f'''diff <(find . ! -type d | cut -c3- | LC_ALL=C sort) \\
     <({{ cut -d' ' -f3- manifest-sha256.txt tagmanifest-sha256.txt
         printf '%s\\n' tagmanifest-sha256.txt tagmanifest-sha512.txt {TAG_SIGNATURE_FILE}
       }} | LC_ALL=C sort) \\
  && echo "every file of the bag is listed in its manifests"'''


# Which key signed each capture, and was it the archive's key then: the key entries on the
# ledger hand authority from key to key; a capture's key must be the one current when its
# capture.completed entry was appended.
_OLDER_KEYS = '''python3 - <<'EOF'
import base64, glob, hashlib, json, os, sys
def shown(v): return ascii(str(v))[1:-1][:200]  # untrusted text, escaped and cut
entries = sorted((json.load(open(p, encoding="utf-8"))
                  for p in glob.glob("data/custody/entries/*.json")), key=lambda e: e["seq"])
keys = [e for e in entries if e["action"] in ("key.created", "key.rotated")]
span = {}  # key id -> (the entry that registered it, the entry that retired it or None)
for i, entry in enumerate(keys):
    kid, pem = entry["payload"]["key_id"], entry["payload"]["public_key_pem"]
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    assert hashlib.sha256(base64.b64decode(body)[-32:]).hexdigest() == kid, \\
        f"entry {entry['seq']} registers a key whose id is not {shown(kid)}"
    assert open(f"data/keys/{kid}.pem", encoding="ascii").read().strip() == pem.strip(), \\
        f"data/keys/{kid}.pem is not the key entry {entry['seq']} registers"
    after = keys[i + 1] if i + 1 < len(keys) else None
    assert after is None or after["signed_by"] == kid, \\
        f"entry {after['seq']} hands authority on from key {kid} but names another signer"
    span[kid] = (entry["seq"], after and after["seq"])
    print(f"key {kid}: registered by entry {entry['seq']} ({entry['action']}), "
          + (f"retired by entry {after['seq']} ({after['action']}, signed by it)"
             if after else "the current key"))
failed = total = 0
for path in sorted(glob.glob("data/captures/*/manifest.json")):
    capture = os.path.basename(os.path.dirname(path))
    kid = json.load(open(path, encoding="utf-8"))["signer"]["key_id"]
    done = [e["seq"] for e in entries if e["action"] == "capture.completed"
            and e["subject"] == f"capture:{capture}"]
    total += 1
    first, last = span.get(kid, (None, None))
    if not done or first is None:
        failed += 1
        print(f"FAIL capture {shown(capture)}: signed by key {shown(kid)}; no key entry "
              "registers that key" if done
              else f"FAIL capture {shown(capture)}: no capture.completed entry records it")
    elif done[0] < first or (last is not None and done[0] > last):
        failed += 1
        print(f"FAIL capture {shown(capture)}: signed by key {shown(kid)}, which entry {done[0]} "
              f"(capture.completed) comes after the key was retired or before it was made "
              f"(entries {first} to {last or 'now'})")
    else:
        print(f"capture {shown(capture)}: signed by key {shown(kid)}, completed in entry "
              f"{done[0]}, while "
              f"that key was the archive's (entries {first} to {last or 'now'})")
print(f"{failed} of {total} captures signed by a key that was not the archive's then")
sys.exit(1 if failed else 0)
EOF'''

def _epoch(gen_time: str) -> int:
    return int(datetime.fromisoformat(gen_time.replace("Z", "+00:00")).timestamp())


def verify_md(
    *,
    case: str,
    origin: str,
    exported_at: str,
    exported_by: str,
    signing_key_id: str,
    checkpoint_key_id: str,
    tree_size: int,
    tokens: Sequence[tuple[int, str, str]],
    timestamp_problems: Sequence[str],
    has_replay: bool,
) -> str:
    """The text of VERIFY.md for one bundle. ``tokens``: (number, TSA URL, genTime)."""
    key = key_path(signing_key_id)
    checkpoint_key = key_path(checkpoint_key_id)
    parts = [f"""# Verifying this evidence bundle by hand

This bundle was exported by Evidence Archiver from the archive `{origin}` on
{exported_at}, at the request of {exported_by}, for the case “{case}”. It is a BagIt 1.0
bag (RFC 8493). Everything below uses standard tools only: bash, coreutils
(`sha256sum`, `sha512sum`, `base64`), OpenSSL 3, Python 3 and its standard library,
and for the web captures the Library of Congress `bagit.py`, `warcio` and `wacz`
(`pip install bagit warcio wacz`). Run each block from this folder (the one holding
this file). `archiver verify-bundle` runs every check at once; you need not trust it.

What is where:

- `data/captures/<capture id>/`: every file of each capture, as captured (WARC, media,
  screenshots, ...); `manifest.json` lists them with their sizes, SHA-256 and SHA-512,
  and `manifest.sig` is the archive's Ed25519 signature over it;
- `data/replay/<capture id>.wacz`: the capture's WARC packaged for ReplayWeb.page;
- `data/custody/entries/<n>.json`: every custody event about these captures, this case
  and the archive's keys; ledger entry *n*, byte for byte the leaf that was hashed;
- `data/custody/proofs/<n>.json`: the inclusion proof of entry *n* in the checkpoint;
- `data/custody/checkpoint.note`: the signed checkpoint (a C2SP signed note) of the
  ledger's Merkle tree of {tree_size} entries;
- `data/custody/timestamps/`: RFC 3161 timestamp tokens of that checkpoint, and the
  Time-Stamping Authority's CA certificates;
- `data/keys/`: the archive's public keys (`<key id>.pem`) and their history;
- `data/report/`: the custody report, for reading (PDF and HTML);
- `data/bundle.json`: the index of all the above.

## 1. Nothing was added, removed or altered

```sh
bagit.py --validate .
```

or with coreutils alone (every digest, then: every payload file is listed):

```sh
sha256sum --quiet -c manifest-sha256.txt &&
sha512sum --quiet -c manifest-sha512.txt &&
sha256sum --quiet -c tagmanifest-sha256.txt &&
sha512sum --quiet -c tagmanifest-sha512.txt &&
diff <(find data -type f | LC_ALL=C sort) <(cut -d' ' -f3- manifest-sha256.txt | LC_ALL=C sort)
```

Either way, then check that the bag holds no file its manifests do not list, at its top
level as well as in `data/` (`bagit.py` does not look outside `data/`): every file is
in the payload manifest, in the tag manifest, or is a tag manifest or its signature
(`diff` prints what differs):

```sh
{_LISTED}
```

## 2. Who made it

The bundle is signed by the archive's key `{signing_key_id}`. A key id is the
SHA-256 of the raw 32-byte Ed25519 public key; compute it from the key file:

```sh
openssl pkey -pubin -in {key} -outform DER | tail -c 32 | sha256sum
```

**Compare it with the key id the archive publishes**, obtained independently of this
bundle (its website, a court filing, the people who run it). Only that comparison says
*who* made the bundle; everything else here only says that it is intact. Then check the
signature over the tag manifest:

```sh
openssl pkeyutl -verify -pubin -inkey {key} -rawin \\
    -in {SIGNED_TAG_MANIFEST} -sigfile {TAG_SIGNATURE_FILE}
```

It prints `Signature Verified Successfully`. `{SIGNED_TAG_MANIFEST}` lists the digest of
every file outside `data/`, among them `manifest-sha256.txt`, which lists the digest of
every file in `data/`: with step 1, this one signature covers every byte of the bundle.

## 3. Each capture, as it was sealed when captured

The capture manifest is canonical JSON (RFC 8785) signed when the capture was made:

```sh
{_MANIFEST_SIGNATURES}
```

Every file of a capture has the size and digests its signed manifest lists:

```sh
{_ARTIFACTS}
```

Each capture is on the custody ledger: an entry `capture.completed` names its
manifest's SHA-256 and the capture it records (the command prints, for each capture,
the file of that entry; a capture without one fails):

```sh
{_ON_LEDGER}
```
"""]
    parts.append(f"""
The WARC files hold every HTTP exchange as it went over the wire; `warcio` recomputes
every record's block and payload digest:

```sh
{_WARCS}
```

A `revisit` record holds no content of its own: it says that a later request got the same
content as an earlier record, which it names (`WARC-Refers-To`), with that record's
payload digest (`WARC-Payload-Digest`). `warcio check` does not look at either; this
checks that every revisit names a record of the same WARC carrying the same payload
digest (which `warcio` just recomputed from that record's bytes):

```sh
{_REVISITS}
```
""")
    if has_replay:
        parts.append("""
To look at a capture as its visitors saw it, open `data/replay/<capture id>.wacz` in
ReplayWeb.page (https://replayweb.page, or its desktop app, which works offline). The
WACZ holds the capture's WARC unchanged (`unzip -p data/replay/ID.wacz
archive/capture.warc.gz | sha256sum` equals the manifest's digest); check the package:

```sh
failed=0 total=0
for wacz in data/replay/*.wacz; do
  total=$((total + 1))
  wacz validate -f "$wacz" </dev/null \\
    || { LC_ALL=C printf 'FAIL %q\\n' "$wacz"; failed=$((failed + 1)); }
done
echo "$failed of $total WACZ files failed"; [ "$failed" -eq 0 ]
```
""")
    parts.append(f"""
## 4. The custody ledger: every event, in the signed checkpoint

Each entry file is the exact leaf of the archive's ledger, an RFC 9162 Merkle tree (the
Certificate Transparency tree). The leaf hash of entry *n* is
`(printf '\\000'; cat data/custody/entries/n.json) | sha256sum`; its inclusion proof
folds it, hash by hash, up to the root signed in the checkpoint. This does it for every
entry:

```sh
{_FOLD}
```

An entry's `signed_by` names the archive key that signed the entry when it was
appended. The archive signs a checkpoint only after checking the signature of every entry
it covers, so the checkpoint's signature vouches for each of them; the entries' own
signatures stay in the archive (`archiver ledger proof SEQ` shows one).

The checkpoint's three first lines (origin, tree size, base64 root) are what the
archive's key `{checkpoint_key_id}` signed; the last line carries the signature after a
4-byte key hash (C2SP signed note):

```sh
work=$(mktemp -d)
awk 'NF == 0 {{exit}} {{print}}' {CHECKPOINT_FILE} > "$work/checkpoint.txt"
tail -n 1 {CHECKPOINT_FILE} | cut -d' ' -f3 | base64 -d | tail -c 64 > "$work/checkpoint.sig"
openssl pkeyutl -verify -pubin -inkey {checkpoint_key} -rawin \\
    -in "$work/checkpoint.txt" -sigfile "$work/checkpoint.sig"
```

### Captures signed by an older key

The archive may have replaced its key since some captures were made (`archiver key
rotate`): their manifests are signed by an older key, which is still in `data/keys/`
(with `history.json`). Such a key is trusted through the ledger, not on its own: the
first key's `key.created` entry registers it, and each `key.rotated` entry, appended
(and signed, as its `signed_by` says) by the key current until then, hands authority to
the key it names. Every one of these entries is in the custody entries, and the first
block of this step proved each of them is in the checkpoint the current key signed; so trust
the current key (step 2, compared with the key id the archive publishes), and it vouches
for the older keys and when each was in use. This checks each key file against its key
entry, that each hand-over was made by the key before it, and that each capture's key was
the archive's key when its `capture.completed` entry was appended:

```sh
{_OLDER_KEYS}
```

## 5. When: trusted timestamps
""")
    if tokens:
        parts.append(f"""
A Time-Stamping Authority (RFC 3161) signed that `{CHECKPOINT_FILE}`, byte for byte,
existed at the time in its token (`genTime`); so did every entry the checkpoint covers.
This does not depend on the archive's clock. `openssl ts -verify` checks a token; use
the TSA's CA certificate *as the TSA publishes it* (`-CAfile`) rather than the copy
here, to know that the TSA is who it says. TSA certificates expire and tokens do not:
`-attime` checks the certificates as of the token's own time.
""")
        for number, tsa, gen_time in tokens:
            token_file, ca_file = token_paths(number)
            parts.append(f"""
Token {number}, from `{tsa}`, genTime {gen_time}:

```sh
openssl ts -reply -in {token_file} -text | grep -E 'Time stamp|TSA|Serial|Hash Algorithm'
openssl ts -verify -data {CHECKPOINT_FILE} -in {token_file} \\
    -CAfile {ca_file} -attime {_epoch(gen_time)}
```
""")
    else:
        reasons = "; ".join(timestamp_problems) or "none was obtained"
        parts.append(f"""
**This bundle carries NO trusted timestamp** ({reasons}). The times it states are those
of the archive's own clock, and nothing independent confirms them: the bundle proves
what was captured and that it was not altered since it was signed, not when.
""")
    parts.append("""
## 6. The custody report

`data/report/custody-report.pdf` (and `.html`) tells the same story in plain words:
what was captured, when, by whom, every file with its digests, every custody event. It
is derived from the files above and is covered by the same manifests and signature.
""")
    return "".join(parts)


__all__ = ["verify_md"]
