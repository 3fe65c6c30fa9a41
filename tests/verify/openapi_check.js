#!/usr/bin/env node
// openapi_check.js - checks HTTP responses of webhook-api against the OpenAPI
// 3.1 contract (docs/openapi.yaml), and the contract itself.
//
//   node tests/verify/openapi_check.js --spec docs/openapi.yaml --check-spec
//   node tests/verify/openapi_check.js --spec docs/openapi.yaml --method GET \
//       --path /v1/apps/acme/endpoints/ep_x --status 200 \
//       [--content-type application/json] [--body-file F]      (else stdin)
//   node tests/verify/openapi_check.js --spec docs/openapi.yaml --record FILE
//
// FILE holds JSON lines {"method","path","status","content_type","body"}
// (body as a string). Exit status: 0 valid, 1 invalid (each problem printed
// with its JSON path), 2 bad usage or no operation/response in the contract
// for the request (callers treat that as a failure too).
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const Ajv2020 = require('ajv/dist/2020').default;
const addFormats = require('ajv-formats');

const SPEC_ID = 'https://webhook-engine.invalid/openapi.json';
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
const MAX_ERRORS = 25;

const USAGE = `usage:
  openapi_check.js [--spec FILE] --check-spec
  openapi_check.js [--spec FILE] --method M --path P --status N
                   [--content-type T] [--body-file F]    (body from stdin without --body-file)
  openapi_check.js [--spec FILE] --record FILE            (JSON lines: method, path, status, content_type, body)

--spec defaults to docs/openapi.yaml of this repository.
Exit 0: valid; 1: invalid; 2: bad usage, or no operation or response of the
contract fits the request (also a failure).`;

class UsageError extends Error {}
// A request the contract has no operation or response for (exit 2).
class NoMatch extends Error {}

function parseArgs(argv) {
  const opts = {};
  const valued = new Set(['--spec', '--method', '--path', '--status', '--content-type',
                          '--body-file', '--record']);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') { opts.help = true; continue; }
    if (a === '--check-spec') { opts.checkSpec = true; continue; }
    let name = a, value;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) { name = a.slice(0, eq); value = a.slice(eq + 1); }
    if (!valued.has(name)) throw new UsageError(`unknown argument '${a}'`);
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new UsageError(`${name} needs a value`);
      value = argv[++i];
    }
    opts[name.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = value;
  }
  return opts;
}

// ---- the document ------------------------------------------------------------

// Parsing the YAML takes most of a run's time, so the parsed document is kept
// as JSON in the temp directory under the SHA-256 of its text (a changed
// document gets a new entry). OPENAPI_CHECK_NO_CACHE=1 turns that off.
function cachePath(text) {
  if (process.env.OPENAPI_CHECK_NO_CACHE) return null;
  const h = crypto.createHash('sha256').update(text).digest('hex').slice(0, 32);
  return path.join(os.tmpdir(), `openapi_check-${process.getuid ? process.getuid() : 0}-${h}.json`);
}

function loadSpec(file, useCache) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read ${file}: ${e.message}`);
  }
  const cached = useCache ? cachePath(text) : null;
  if (cached) {
    try {
      // only an entry this user wrote (the temp directory is shared)
      if (process.getuid && fs.statSync(cached).uid !== process.getuid()) throw new Error('not ours');
      return { text, doc: JSON.parse(fs.readFileSync(cached, 'utf8')), errors: [] };
    } catch (_) { /* not there yet, or unreadable: parse */ }
  }
  const result = parseSpec(text);
  if (cached && result.doc) {
    try {
      const tmp = `${cached}.${process.pid}`;
      fs.writeFileSync(tmp, JSON.stringify(result.doc), { mode: 0o600 });
      fs.renameSync(tmp, cached);
    } catch (_) { /* a cache that cannot be written only costs time */ }
  }
  return result;
}

function parseSpec(text) {
  const YAML = require('yaml');
  const parsed = YAML.parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (parsed.errors.length)
    return { text, doc: null, errors: parsed.errors.map((e) => `YAML: ${e.message}`) };
  const doc = parsed.toJS({ maxAliasCount: 100 });
  if (!doc || typeof doc !== 'object' || !doc.paths || typeof doc.paths !== 'object')
    return { text, doc: null, errors: ['not an OpenAPI document (no "paths" object)'] };
  return { text, doc, errors: [] };
}

const escapePointer = (s) => String(s).replace(/~/g, '~0').replace(/\//g, '~1');
const pointer = (segs) => '/' + segs.map(escapePointer).join('/');

function getPointer(doc, ptr) {
  if (ptr === '' || ptr === '/') return doc;
  let cur = doc;
  for (const raw of ptr.slice(1).split('/')) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (cur === null || typeof cur !== 'object' || !(seg in cur)) return undefined;
    cur = cur[seg];
  }
  return cur;
}

// Follows a local $ref (an OpenAPI reference object, not a schema) and returns
// the object with the JSON pointer it lives at.
function deref(doc, obj, ptr) {
  for (let hops = 0; obj && typeof obj === 'object' && typeof obj.$ref === 'string'; hops++) {
    if (!obj.$ref.startsWith('#') || hops > 20) throw new NoMatch(`cannot follow $ref ${obj.$ref}`);
    ptr = decodeURIComponent(obj.$ref.slice(1));
    obj = getPointer(doc, ptr);
    if (obj === undefined) throw new NoMatch(`$ref ${'#' + ptr} does not resolve`);
  }
  return { obj, ptr };
}

class Contract {
  constructor(doc) {
    this.doc = doc;
    this.ajv = new Ajv2020({
      strict: false,
      allErrors: true,
      validateFormats: true,
      // the document is not a schema: do not check it against the meta-schema
      validateSchema: false,
    });
    addFormats(this.ajv);
    // The whole document is one Ajv resource, so that '#/components/...'
    // references resolve within it; each schema is compiled once, on first use.
    this.ajv.addSchema(doc, SPEC_ID, undefined, false);
    this.cache = new Map();
  }

  validator(ptr) {
    let v = this.cache.get(ptr);
    if (!v) {
      const frag = ptr.slice(1).split('/').map(encodeURIComponent).join('/');
      v = this.ajv.getSchema(`${SPEC_ID}#/${frag}`);
      if (!v) throw new Error(`cannot compile the schema at #${ptr}`);
      this.cache.set(ptr, v);
    }
    return v;
  }

  // The path template that matches the concrete path: the same number of
  // segments, each literal equal or a whole-segment {param} (non-empty);
  // literal segments win over templated ones, from the left.
  matchPath(concrete) {
    const p = concrete.split('?')[0].split('#')[0];
    const segs = p.split('/');
    let best = null, bestScore = null;
    for (const tmpl of Object.keys(this.doc.paths)) {
      const ts = tmpl.split('/');
      if (ts.length !== segs.length) continue;
      const score = [];
      let ok = true;
      for (let i = 0; i < ts.length && ok; i++) {
        if (/^\{[^{}]+\}$/.test(ts[i])) { ok = segs[i] !== ''; score.push(0); }
        else { ok = ts[i] === segs[i]; score.push(1); }
      }
      if (!ok) continue;
      if (!best || compareScores(score, bestScore) > 0) { best = tmpl; bestScore = score; }
    }
    return best;
  }

  // The response object for (method, path, status) and its pointer.
  findResponse(method, concretePath, status) {
    const tmpl = this.matchPath(concretePath);
    if (!tmpl) throw new NoMatch(`no path of the contract matches ${concretePath}`);
    const m = method.toLowerCase();
    const { obj: item, ptr: itemPtr } = deref(this.doc, this.doc.paths[tmpl], pointer(['paths', tmpl]));
    const op = item[m];
    if (!METHODS.includes(m) || !op)
      throw new NoMatch(`${method.toUpperCase()} ${tmpl} is not in the contract` +
        ` (it has ${METHODS.filter((x) => item[x]).map((x) => x.toUpperCase()).join(', ') || 'no operation'})`);
    const responses = op.responses || {};
    const s = String(status);
    const key = s in responses ? s : `${s[0]}XX` in responses ? `${s[0]}XX` : 'default' in responses ? 'default' : null;
    if (!key)
      throw new NoMatch(`${method.toUpperCase()} ${tmpl} (${op.operationId || 'no operationId'}) does not` +
        ` document status ${s} (documented: ${Object.keys(responses).join(', ')})`);
    const r = deref(this.doc, responses[key], `${itemPtr}/${m}/responses/${escapePointer(key)}`);
    return { tmpl, op, response: r.obj, responsePtr: r.ptr, key };
  }

  // Checks one response; returns a list of problems (empty when valid).
  check(method, concretePath, status, contentType, body) {
    const { response, responsePtr } = this.findResponse(method, concretePath, status);
    const content = response.content;
    const text = body == null ? '' : Buffer.isBuffer(body) ? body.toString('utf8') : String(body);
    if (!content || Object.keys(content).length === 0) {
      return text.length ? [`the contract has no body for status ${status}, but ${Buffer.byteLength(text)} bytes came`] : [];
    }
    const media = pickMedia(content, contentType);
    if (!media) {
      return [`content type ${contentType} is not documented for status ${status}` +
        ` (documented: ${Object.keys(content).join(', ')})`];
    }
    const mo = content[media];
    let instance = text;
    if (isJsonMedia(media)) {
      if (!text.trim()) return [`empty body, expected ${media}`];
      try {
        instance = JSON.parse(text);
      } catch (e) {
        return [`body is not JSON: ${e.message}`];
      }
    }
    if (!mo || !mo.schema) return [];
    const v = this.validator(`${responsePtr}/content/${escapePointer(media)}/schema`);
    return v(instance) ? [] : formatErrors(v.errors);
  }
}

function compareScores(a, b) {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return 0;
}

const mediaBase = (t) => String(t).split(';')[0].trim().toLowerCase();
const isJsonMedia = (m) => { const b = mediaBase(m); return b === 'application/json' || b.endsWith('+json'); };

function pickMedia(content, contentType) {
  const keys = Object.keys(content);
  if (!contentType) {
    return keys.find((k) => mediaBase(k) === 'application/json') || keys[0];
  }
  const want = mediaBase(contentType);
  return keys.find((k) => mediaBase(k) === want) ||
    keys.find((k) => mediaBase(k) === want.split('/')[0] + '/*') ||
    keys.find((k) => mediaBase(k) === '*/*') || null;
}

// "/events/0/id" -> "$.events[0].id"
function jsonPath(instancePath) {
  let out = '$';
  if (!instancePath) return out;
  for (const raw of instancePath.slice(1).split('/')) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    out += /^[0-9]+$/.test(seg) ? `[${seg}]` : /^[A-Za-z_][A-Za-z0-9_]*$/.test(seg) ? `.${seg}` : `[${JSON.stringify(seg)}]`;
  }
  return out;
}

function formatErrors(errors) {
  const lines = [];
  for (const e of errors || []) {
    let msg = e.message || e.keyword;
    const p = e.params || {};
    if (e.keyword === 'additionalProperties') msg = `has a member the contract does not name: "${p.additionalProperty}"`;
    else if (e.keyword === 'unevaluatedProperties') msg = `has a member the contract does not name: "${p.unevaluatedProperty}"`;
    else if (e.keyword === 'enum') msg += `: ${JSON.stringify(p.allowedValues)}`;
    else if (e.keyword === 'const') msg += `: ${JSON.stringify(p.allowedValue)}`;
    const line = `${jsonPath(e.instancePath)}: ${msg}  (schema ${e.schemaPath})`;
    if (!lines.includes(line)) lines.push(line);
  }
  if (lines.length > MAX_ERRORS) {
    const n = lines.length - MAX_ERRORS;
    lines.length = MAX_ERRORS;
    lines.push(`... and ${n} more`);
  }
  return lines;
}

// ---- --check-spec --------------------------------------------------------------

function walk(node, ptr, fn) {
  if (node === null || typeof node !== 'object') return;
  fn(node, ptr);
  for (const [k, v] of Object.entries(node)) walk(v, `${ptr}/${escapePointer(k)}`, fn);
}

async function checkSpec(doc) {
  const problems = [];
  if (typeof doc.openapi !== 'string' || !doc.openapi.startsWith('3.1.'))
    problems.push(`openapi is ${JSON.stringify(doc.openapi)}, expected 3.1.x`);

  // 1. The document against the OpenAPI 3.1 schema.
  const { Validator } = await import('@seriousme/openapi-schema-validator');
  const validator = new Validator();
  const res = await validator.validate(structuredClone(doc));
  if (!res.valid) {
    const errs = Array.isArray(res.errors) ? res.errors : [res.errors];
    for (const e of errs.slice(0, MAX_ERRORS))
      problems.push(`OpenAPI schema: ${e.instancePath || ''} ${e.message || JSON.stringify(e)}` +
        (e.params ? ` ${JSON.stringify(e.params)}` : ''));
  }

  // 2. Every local $ref resolves.
  walk(doc, '', (node, ptr) => {
    if (typeof node.$ref === 'string') {
      if (!node.$ref.startsWith('#')) problems.push(`${ptr}: $ref ${node.$ref} is not local`);
      else if (getPointer(doc, decodeURIComponent(node.$ref.slice(1))) === undefined)
        problems.push(`${ptr}: $ref ${node.$ref} does not resolve`);
    }
  });
  if (problems.some((p) => p.includes('does not resolve') || p.includes('is not local')))
    return { problems, stats: null };

  // 3. Conventions of this API.
  const contract = new Contract(doc);
  const opIds = new Map();
  let nops = 0;
  for (const [tmpl, rawItem] of Object.entries(doc.paths)) {
    const { obj: item } = deref(doc, rawItem, pointer(['paths', tmpl]));
    const names = [...tmpl.matchAll(/\{([^{}]+)\}/g)].map((m) => m[1]);
    for (const m of METHODS) {
      const op = item[m];
      if (!op) continue;
      nops++;
      const where = `${m.toUpperCase()} ${tmpl}`;
      if (!op.operationId) problems.push(`${where}: no operationId`);
      else if (opIds.has(op.operationId)) problems.push(`${where}: operationId ${op.operationId} also used by ${opIds.get(op.operationId)}`);
      else opIds.set(op.operationId, where);
      if (!op.summary) problems.push(`${where}: no summary`);
      const params = [...(item.parameters || []), ...(op.parameters || [])]
        .map((p) => deref(doc, p, '').obj);
      const pathParams = params.filter((p) => p.in === 'path').map((p) => p.name);
      for (const n of names) if (!pathParams.includes(n)) problems.push(`${where}: path parameter {${n}} is not declared`);
      for (const n of pathParams) if (!names.includes(n)) problems.push(`${where}: path parameter ${n} is not in the path`);
      const codes = Object.keys(op.responses || {});
      if (!codes.some((c) => /^2/.test(c))) problems.push(`${where}: no 2xx response`);
      if (!codes.includes('500')) problems.push(`${where}: no 500 response`);
      const authenticated = !(Array.isArray(op.security) && op.security.length === 0);
      if (authenticated) {
        for (const c of ['401', '403', '429', '503'])
          if (!codes.includes(c)) problems.push(`${where}: authenticated, but no ${c} response`);
      }
      if ((m === 'post' || m === 'patch' || m === 'put') && authenticated && !codes.includes('413'))
        problems.push(`${where}: takes a body, but no 413 response`);
      for (const c of codes) {
        if (/^[45]/.test(c)) {
          const r = deref(doc, op.responses[c], '').obj;
          if (!r.content || !r.content['application/json'] || !r.content['application/json'].schema)
            if (!(tmpl === '/readyz' && c === '503')) problems.push(`${where}: error response ${c} has no application/json schema`);
        }
      }
    }
  }

  // 4. Every schema compiles, and every example fits its schema.
  let nschemas = 0;
  const compile = (ptr, where) => {
    try {
      nschemas++;
      return contract.validator(ptr);
    } catch (e) {
      problems.push(`${where}: schema does not compile: ${e.message}`);
      return null;
    }
  };
  for (const name of Object.keys((doc.components && doc.components.schemas) || {})) {
    const ptr = pointer(['components', 'schemas', name]);
    const s = doc.components.schemas[name];
    if (!contract.ajv.validateSchema(s)) problems.push(`${ptr}: ${contract.ajv.errorsText(contract.ajv.errors)}`);
    compile(ptr, `#${ptr}`);
  }
  walk(doc, '', (node, ptr) => {
    // media type objects: {schema, example(s)} under a "content" map
    if (!/\/content\/[^/]+$/.test(ptr) || !node.schema) return;
    if (!ptr.startsWith('/paths/') && !ptr.startsWith('/components/')) return;
    const v = compile(`${ptr}/schema`, `#${ptr}`);
    if (!v) return;
    const media = ptr.split('/').pop().replace(/~1/g, '/');
    const examples = [];
    if ('example' in node) examples.push(['example', node.example]);
    for (const [k, ex] of Object.entries(node.examples || {})) {
      const e = deref(doc, ex, '').obj;
      if (e && 'value' in e) examples.push([`examples.${k}`, e.value]);
    }
    for (const [label, value] of examples) {
      if (!isJsonMedia(media) && typeof value !== 'string') continue;
      if (!v(value)) for (const l of formatErrors(v.errors)) problems.push(`#${ptr} ${label}: ${l}`);
    }
  });
  return { problems, stats: { operations: nops, schemas: nschemas } };
}

// ---- main ----------------------------------------------------------------------

function readBody(opts) {
  if (opts.bodyFile !== undefined) {
    try {
      return fs.readFileSync(opts.bodyFile);
    } catch (e) {
      throw new UsageError(`cannot read ${opts.bodyFile}: ${e.message}`);
    }
  }
  if (process.stdin.isTTY) return Buffer.alloc(0);
  return fs.readFileSync(0);
}

function checkRecord(contract, file) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read ${file}: ${e.message}`);
  }
  let checked = 0, failed = 0, unmatched = 0;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    checked++;
    let r;
    try {
      r = JSON.parse(line);
      if (!r || typeof r.method !== 'string' || typeof r.path !== 'string' ||
          !Number.isInteger(Number(r.status)))
        throw new Error('needs "method", "path" and "status"');
    } catch (e) {
      failed++; unmatched++;
      console.log(`line ${i + 1}: not a record: ${e.message}`);
      continue;
    }
    const body = typeof r.body === 'string' || r.body == null ? r.body : JSON.stringify(r.body);
    const what = `line ${i + 1}: ${r.method.toUpperCase()} ${r.path} ${r.status}`;
    try {
      const problems = contract.check(r.method, r.path, Number(r.status), r.content_type, body);
      if (problems.length) {
        failed++;
        console.log(`${what}: does not match the contract`);
        for (const p of problems) console.log(`  ${p}`);
      }
    } catch (e) {
      if (!(e instanceof NoMatch)) throw e;
      failed++; unmatched++;
      console.log(`${what}: ${e.message}`);
    }
  }
  console.log(`checked ${checked} responses, ${failed} failed`);
  return unmatched ? 2 : failed ? 1 : 0;
}

async function main(argv) {
  const opts = parseArgs(argv);
  if (opts.help) { console.log(USAGE); return 0; }
  const specFile = opts.spec || path.join(__dirname, '..', '..', 'docs', 'openapi.yaml');
  const { doc, errors } = loadSpec(specFile, !opts.checkSpec);
  const modes = [opts.checkSpec, opts.record !== undefined, opts.method !== undefined || opts.path !== undefined].filter(Boolean).length;
  if (modes !== 1) throw new UsageError('give exactly one of --check-spec, --record FILE, or --method/--path/--status');

  if (opts.checkSpec) {
    if (!doc) { for (const e of errors) console.log(`${specFile}: ${e}`); return 1; }
    const { problems, stats } = await checkSpec(doc);
    if (problems.length) {
      for (const p of problems) console.log(`${specFile}: ${p}`);
      console.log(`${specFile}: ${problems.length} problems`);
      return 1;
    }
    console.log(`${specFile}: valid OpenAPI ${doc.openapi}, ${stats.operations} operations, ${stats.schemas} schemas compiled`);
    return 0;
  }
  if (!doc) { for (const e of errors) console.error(`${specFile}: ${e}`); return 2; }
  const contract = new Contract(doc);
  if (opts.record !== undefined) return checkRecord(contract, opts.record);

  if (!opts.method || !opts.path || opts.status === undefined)
    throw new UsageError('--method, --path and --status go together');
  if (!/^[1-5][0-9][0-9]$/.test(opts.status)) throw new UsageError(`--status ${opts.status} is not an HTTP status`);
  const body = readBody(opts);
  const what = `${opts.method.toUpperCase()} ${opts.path} ${opts.status}`;
  try {
    const problems = contract.check(opts.method, opts.path, Number(opts.status), opts.contentType, body);
    if (problems.length) {
      console.log(`${what}: does not match the contract`);
      for (const p of problems) console.log(`  ${p}`);
      return 1;
    }
  } catch (e) {
    if (!(e instanceof NoMatch)) throw e;
    console.log(`${what}: ${e.message}`);
    return 2;
  }
  console.log(`${what}: ok`);
  return 0;
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (e) => {
  if (e instanceof UsageError) {
    console.error(`openapi_check.js: ${e.message}\n${USAGE}`);
  } else {
    console.error(`openapi_check.js: ${e && e.stack ? e.stack : e}`);
  }
  process.exitCode = 2;
});
