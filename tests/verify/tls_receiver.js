#!/usr/bin/env node
/*
 * tls_receiver.js - an HTTPS webhook receiver for the mTLS tests, built on
 * Node's own TLS (not the engine's code): it can require a client
 * certificate signed by a given CA, and records every request it accepts
 * as one JSON line in the format of webhook-receiver --record (path,
 * body_b64, body_len, webhook_id, webhook_timestamp, webhook_signature,
 * received_at_us) plus client_cn, the client certificate's common name.
 * Handshakes it refuses are counted in the --count-file's second number.
 *
 *   node tests/verify/tls_receiver.js --cert PEM --key PEM
 *        [--client-ca PEM] --port-file FILE --record FILE --count-file FILE
 *
 * Listens on 127.0.0.1 (an ephemeral port, written to --port-file) until
 * it is sent SIGTERM.
 */
"use strict";

const fs = require("node:fs");
const https = require("node:https");

function parseArgs(argv) {
    const o = {};
    for (let i = 0; i < argv.length; i += 2) {
        const name = argv[i];
        if (!["--cert", "--key", "--client-ca", "--port-file", "--record",
              "--count-file"].includes(name) || i + 1 >= argv.length) {
            process.stderr.write(`tls_receiver.js: bad argument ${name}\n`);
            process.exit(2);
        }
        o[name.slice(2)] = argv[i + 1];
    }
    for (const need of ["cert", "key", "port-file", "record", "count-file"])
        if (!o[need]) {
            process.stderr.write(`tls_receiver.js: --${need} is required\n`);
            process.exit(2);
        }
    return o;
}

const o = parseArgs(process.argv.slice(2));
const options = { cert: fs.readFileSync(o.cert), key: fs.readFileSync(o.key) };
if (o["client-ca"]) {
    options.ca = fs.readFileSync(o["client-ca"]);
    options.requestCert = true;
    options.rejectUnauthorized = true;
}
let accepted = 0, refused = 0;
const writeCount = () =>
    fs.writeFileSync(o["count-file"], `${accepted} ${refused}\n`);

const server = https.createServer(options, (req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
        const body = Buffer.concat(chunks);
        const peer = req.socket.getPeerCertificate();
        const rec = {
            path: req.url,
            body_b64: body.toString("base64"),
            body_len: body.length,
            webhook_id: req.headers["webhook-id"],
            webhook_timestamp: req.headers["webhook-timestamp"],
            webhook_signature: req.headers["webhook-signature"],
            received_at_us: Date.now() * 1000,
            client_cn: peer && peer.subject ? peer.subject.CN : null,
        };
        fs.appendFileSync(o.record, `${JSON.stringify(rec)}\n`);
        accepted++;
        writeCount();
        res.writeHead(200, { "content-type": "text/plain" });
        res.end("ok");
    });
});
server.on("tlsClientError", (e) => {
    refused++;
    writeCount();
    process.stderr.write(`tls_receiver.js: refused a handshake: ${e.message}\n`);
});
fs.writeFileSync(o.record, "");
writeCount();
server.listen(0, "127.0.0.1", () => {
    fs.writeFileSync(o["port-file"], `${server.address().port}\n`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
