#!/usr/bin/env node
/*
 * verify.js - checks every request a webhook-receiver recorded (its
 * --record JSON Lines file) with the published `standardwebhooks` library,
 * unchanged, as a customer's receiver would. Used by the end-to-end tests
 * as a verifier independent of the engine's C signing code.
 *
 *   node tests/verify/verify.js --record FILE --secret [PREFIX=]whsec_...
 *        [--secret ...] [--public-key [PREFIX=]whpk_...] [--expect-count N]
 *        [--library-only]
 *
 * Each record is verified with the secret of the longest matching path
 * prefix, against the exact body bytes (body_b64) and the recorded
 * webhook-id / webhook-timestamp / webhook-signature headers. ed25519
 * ("v1a") signatures are verified with Node's own crypto.verify and the
 * public key of the longest matching prefix; a record whose path has
 * both a secret and a public key must carry a valid signature of each
 * kind. The
 * library's 5-minute timestamp tolerance is applied relative to the time
 * the receiver got the request (received_at_us), not to the time this
 * script runs, so an old record still verifies and a request that was
 * already stale on arrival still fails.
 *
 * Exit status: 0 when every record verified (and the count matched
 * --expect-count), 1 otherwise, 2 on bad arguments or an unreadable file.
 */
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const readline = require("node:readline");
const { Webhook } = require("standardwebhooks");

const TOLERANCE_S = 5 * 60; /* the library's WEBHOOK_TOLERANCE_IN_SECONDS */
const FAILURES_SHOWN = 10;

const USAGE = `usage: node verify.js --record FILE --secret [PREFIX=]whsec_... [--secret ...]
                      [--public-key [PREFIX=]whpk_...] [--expect-count N]
                      [--library-only]

  --record FILE       JSON Lines written by webhook-receiver --record
  --secret P=whsec_X  secret for request paths starting with P (P starts
                      with '/'); without P= (or with an empty P) for every
                      path. The longest matching prefix wins; several
                      secrets for one prefix are all tried (rotation).
  --public-key P=whpk_X  ed25519 public key for paths starting with P: a
                      "v1a" entry must verify with it (node:crypto); at
                      least one --secret or --public-key is required
  --expect-count N    also fail unless the record holds exactly N requests
  --library-only      fail bodies that are not valid UTF-8 instead of
                      checking them byte-exactly with node:crypto (the
                      library decodes bodies as UTF-8, see below)

Bodies that are not valid UTF-8 cannot be passed to standardwebhooks'
verify() byte-exactly: it turns a Buffer into a string (UTF-8, invalid
sequences become U+FFFD) and signs the re-encoded string. Such records are
checked with the same algorithm over the raw bytes (HMAC-SHA256 of
"id.timestamp.body", constant-time compare, same tolerance) and counted
separately; --library-only makes them failures.`;

function usage(msg) {
    process.stderr.write(`verify.js: ${msg} (see --help)\n`);
    process.exit(2);
}

function parseArgs(argv) {
    const opts = { record: null, secrets: [], publicKeys: [],
                   expectCount: null, libraryOnly: false };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const eq = a.startsWith("--") ? a.indexOf("=") : -1;
        const name = eq > 0 ? a.slice(0, eq) : a;
        const takeValue = () => {
            if (eq > 0)
                return a.slice(eq + 1);
            if (i + 1 >= argv.length)
                usage(`${name} needs a value`);
            return argv[++i];
        };
        switch (name) {
        case "--record":
            opts.record = takeValue();
            break;
        case "--secret":
            opts.secrets.push(parseSecret(takeValue()));
            break;
        case "--public-key":
            opts.publicKeys.push(parsePublicKey(takeValue()));
            break;
        case "--expect-count": {
            const v = takeValue();
            if (!/^[0-9]{1,9}$/.test(v))
                usage(`--expect-count ${v}: not a count`);
            opts.expectCount = Number(v);
            break;
        }
        case "--library-only":
            if (eq > 0)
                usage("--library-only takes no value");
            opts.libraryOnly = true;
            break;
        case "-h":
        case "--help":
            process.stdout.write(`${USAGE}\n`);
            process.exit(0);
            break;
        default:
            usage(`unknown argument ${a}`);
        }
    }
    if (!opts.record)
        usage("--record is required");
    if (opts.secrets.length === 0 && opts.publicKeys.length === 0)
        usage("at least one --secret or --public-key is required");
    return opts;
}

/* "[PREFIX=]whsec_..." -> {prefix, secret, wh, key}. A whsec_ value may
 * itself contain '=' (base64 padding), so a bare secret is recognised by
 * its whsec_ start before splitting at '='. */
function parseSecret(arg) {
    let prefix = "";
    let secret = arg;
    if (!arg.startsWith("whsec_")) {
        const eq = arg.indexOf("=");
        if (eq < 0)
            usage(`--secret ${redact(arg)}: expected [PREFIX=]whsec_...`);
        prefix = arg.slice(0, eq);
        secret = arg.slice(eq + 1);
        if (prefix !== "" && !prefix.startsWith("/"))
            usage(`--secret: prefix ${prefix} must start with '/'`);
    }
    if (!secret.startsWith("whsec_"))
        usage(`--secret for ${prefix || "every path"}: the secret must ` +
              "start with whsec_");
    let wh;
    try {
        wh = new Webhook(secret);
    } catch (e) {
        usage(`--secret for ${prefix || "every path"}: ${e.message}`);
    }
    const b64 = secret.slice("whsec_".length);
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64))
        usage(`--secret for ${prefix || "every path"}: not base64`);
    return { prefix, wh, key: Buffer.from(b64, "base64") };
}

/* "[PREFIX=]whpk_..." -> {prefix, key} with key a node:crypto KeyObject
 * made from the raw 32-byte ed25519 public key. */
function parsePublicKey(arg) {
    let prefix = "";
    let text = arg;
    if (!arg.startsWith("whpk_")) {
        const eq = arg.indexOf("=");
        if (eq < 0)
            usage(`--public-key ${arg}: expected [PREFIX=]whpk_...`);
        prefix = arg.slice(0, eq);
        text = arg.slice(eq + 1);
        if (prefix !== "" && !prefix.startsWith("/"))
            usage(`--public-key: prefix ${prefix} must start with '/'`);
    }
    const raw = Buffer.from(text.slice("whpk_".length), "base64");
    if (!text.startsWith("whpk_") || raw.length !== 32 ||
        raw.toString("base64") !== text.slice("whpk_".length))
        usage(`--public-key ${text}: expected whpk_ and the base64 of 32 bytes`);
    const key = crypto.createPublicKey({
        key: { kty: "OKP", crv: "Ed25519", x: raw.toString("base64url") },
        format: "jwk" });
    return { prefix, key };
}

/* Checks the timestamp like the library does; throws on failure. */
function checkTimestamp(ts, nowMs) {
    const t = parseInt(ts, 10);
    if (Number.isNaN(t))
        throw new Error("Invalid Signature Headers");
    const now = Math.floor(nowMs / 1000);
    if (now - t > TOLERANCE_S)
        throw new Error("Message timestamp too old");
    if (t > now + TOLERANCE_S)
        throw new Error("Message timestamp too new");
    return t;
}

/* Standard Webhooks "v1a": an ed25519 signature of "id.timestamp.body" by
 * key, checked with node:crypto. */
function verifyEd25519(key, headers, body, nowMs) {
    const id = headers["webhook-id"];
    const ts = headers["webhook-timestamp"];
    const sigs = headers["webhook-signature"];
    if (!id || !ts || !sigs)
        throw new Error("Missing required headers");
    checkTimestamp(ts, nowMs);
    const content = Buffer.concat([Buffer.from(`${id}.${ts}.`, "utf8"), body]);
    for (const vs of sigs.split(" ")) {
        const [version, sig] = vs.split(",");
        if (version !== "v1a" || sig === undefined)
            continue;
        const got = Buffer.from(sig, "base64");
        if (got.length === 64 && got.toString("base64") === sig &&
            crypto.verify(null, content, key, got))
            return;
    }
    throw new Error("No matching v1a signature found");
}

function redact(s) {
    return s.length > 12 ? `${s.slice(0, 12)}...` : s;
}

function secretsFor(secrets, path) {
    let best = -1;
    for (const s of secrets)
        if (path.startsWith(s.prefix) && s.prefix.length > best)
            best = s.prefix.length;
    return secrets.filter((s) => s.prefix.length === best &&
                                 path.startsWith(s.prefix));
}

/* The library reads the clock only in its timestamp check; for the
 * duration of one synchronous verify() call the clock reads the time the
 * receiver got the request. The signature itself is computed from the
 * recorded header, so nothing about it is relaxed. */
function atTime(nowMs, fn) {
    const realNow = Date.now;
    Date.now = () => nowMs;
    try {
        return fn();
    } finally {
        Date.now = realNow;
    }
}

function utf8Exact(buf) {
    return Buffer.from(buf.toString("utf8"), "utf8").equals(buf);
}

/* Standard Webhooks over raw bytes, for bodies the library cannot take. */
function verifyRaw(key, headers, body, nowMs) {
    const id = headers["webhook-id"];
    const ts = headers["webhook-timestamp"];
    const sigs = headers["webhook-signature"];
    if (!id || !ts || !sigs)
        throw new Error("Missing required headers");
    const t = checkTimestamp(ts, nowMs);
    const mac = crypto.createHmac("sha256", key)
        .update(`${id}.${t}.`, "utf8").update(body).digest();
    for (const vs of sigs.split(" ")) {
        const [version, sig] = vs.split(",");
        if (version !== "v1" || sig === undefined)
            continue;
        const got = Buffer.from(sig, "base64");
        if (got.length === mac.length && crypto.timingSafeEqual(got, mac) &&
            got.toString("base64") === sig)
            return;
    }
    throw new Error("No matching signature found");
}

/* Returns {ok, raw, reason}. */
function verifyRecord(rec, secrets, opts) {
    if (typeof rec.path !== "string")
        return { ok: false, reason: "record has no path" };
    if (typeof rec.body_b64 !== "string")
        return { ok: false, reason: "record has no body_b64" };
    const body = Buffer.from(rec.body_b64, "base64");
    if (body.toString("base64") !== rec.body_b64)
        return { ok: false, reason: "body_b64 is not canonical base64" };
    if (typeof rec.body_len === "number" && rec.body_len !== body.length)
        return { ok: false, reason: `body_len is ${rec.body_len} but ` +
                                    `body_b64 holds ${body.length} bytes` };
    const cands = secretsFor(secrets, rec.path);
    const keys = secretsFor(opts.publicKeys, rec.path);
    if (cands.length === 0 && keys.length === 0)
        return { ok: false, reason: `no --secret or --public-key matches ` +
                                    `path ${rec.path}` };
    const headers = {};
    for (const [h, f] of [["webhook-id", "webhook_id"],
                          ["webhook-timestamp", "webhook_timestamp"],
                          ["webhook-signature", "webhook_signature"]])
        if (typeof rec[f] === "string")
            headers[h] = rec[f];
    const nowMs = Number.isSafeInteger(rec.received_at_us)
                      ? Math.floor(rec.received_at_us / 1000)
                      : null;
    if (nowMs === null)
        return { ok: false, reason: "record has no received_at_us" };
    const libraryCan = utf8Exact(body);
    if (!libraryCan && opts.libraryOnly)
        return { ok: false, reason: "body is not valid UTF-8; " +
                 "standardwebhooks' verify() cannot check it byte-exactly" };
    if (keys.length > 0) {
        let edReason = "";
        const edOk = keys.some((k) => {
            try {
                verifyEd25519(k.key, headers, body, nowMs);
                return true;
            } catch (e) {
                edReason = edReason || e.message;
                return false;
            }
        });
        if (!edOk)
            return { ok: false, reason: edReason };
        if (cands.length === 0)
            return { ok: true, raw: false };
    }
    let reason = "";
    for (const s of cands) {
        try {
            if (libraryCan)
                atTime(nowMs, () => s.wh.verify(body, headers,
                                                 { jsonParse: false }));
            else
                verifyRaw(s.key, headers, body, nowMs);
            return { ok: true, raw: !libraryCan };
        } catch (e) {
            reason = reason || e.message;
        }
    }
    return { ok: false, reason };
}

function describe(rec, lineNo) {
    const id = typeof rec.webhook_id === "string" ? rec.webhook_id
                                                  : "(no webhook-id)";
    const seq = rec.seq !== undefined ? `seq ${rec.seq}` : `line ${lineNo}`;
    return `${seq} ${rec.path} ${id}`;
}

async function main() {
    const opts = parseArgs(process.argv.slice(2));
    let input;
    try {
        fs.accessSync(opts.record, fs.constants.R_OK);
        input = fs.createReadStream(opts.record);
    } catch (e) {
        process.stderr.write(`verify.js: cannot read ${opts.record}: ` +
                             `${e.message}\n`);
        process.exit(2);
    }
    const rl = readline.createInterface({ input, crlfDelay: Infinity });
    let total = 0, verified = 0, raw = 0, lineNo = 0;
    const failures = [];
    for await (const line of rl) {
        lineNo++;
        if (line.trim() === "")
            continue;
        total++;
        let rec, res;
        try {
            rec = JSON.parse(line);
        } catch (e) {
            failures.push(`line ${lineNo}: not JSON: ${e.message}`);
            continue;
        }
        if (rec === null || typeof rec !== "object" || Array.isArray(rec)) {
            failures.push(`line ${lineNo}: not a JSON object`);
            continue;
        }
        res = verifyRecord(rec, opts.secrets, opts);
        if (res.ok) {
            verified++;
            if (res.raw)
                raw++;
        } else {
            failures.push(`${describe(rec, lineNo)}: ${res.reason}`);
        }
    }
    console.log(`verified ${verified} of ${total} requests`);
    if (raw)
        console.log(`(${raw} of them with bodies that are not valid UTF-8, ` +
                    "checked over the raw bytes with node:crypto; see --help)");
    for (const f of failures.slice(0, FAILURES_SHOWN))
        console.log(`  FAIL ${f}`);
    if (failures.length > FAILURES_SHOWN)
        console.log(`  ... and ${failures.length - FAILURES_SHOWN} more`);
    let ok = failures.length === 0;
    if (opts.expectCount !== null && opts.expectCount !== total) {
        console.log(`expected ${opts.expectCount} requests, the record ` +
                    `holds ${total}`);
        ok = false;
    }
    process.exitCode = ok ? 0 : 1;
}

main().catch((e) => {
    process.stderr.write(`verify.js: ${e.stack || e}\n`);
    process.exit(2);
});
