import { redactSecrets } from './secret-redaction';

/**
 * run_cases.runtime_snapshot_json (CONTRACT §3.7), secrets redacted by pattern (secret-redaction).
 * Pure: sha256 is injected so the module stays free of node:crypto.
 */

// ---------------------------------------------------------------------------------------------
// Python json.dumps(sort_keys=True, separators=(",", ":")) with ensure_ascii=True.

const SHORT_ESCAPES: Readonly<Record<string, string>> = {
  '"': '\\"',
  '\\': '\\\\',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
  '\b': '\\b',
  '\f': '\\f',
};

/** Everything outside printable ASCII becomes \uXXXX; astral characters are already UTF-16 pairs. */
function pythonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const ch = s.charAt(i);
    const code = s.charCodeAt(i);
    const short = SHORT_ESCAPES[ch];
    if (short !== undefined) out += short;
    else if (code < 0x20 || code > 0x7e) out += `\\u${code.toString(16).padStart(4, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

/** Python float repr: shortest round-trip digits, exponent form below 1e-4 and from 1e16. */
function pythonFloat(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (!Number.isFinite(n)) return n > 0 ? 'Infinity' : '-Infinity';
  const [mantissa = '', expText = '0'] = n.toExponential().split('e');
  const exp = Number(expText);
  const digits = mantissa.replace('-', '').replace('.', '');
  const sign = n < 0 ? '-' : '';
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits.charAt(0)}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
  const intPart = digits.slice(0, exp + 1).padEnd(exp + 1, '0');
  return `${sign}${intPart}.${digits.slice(exp + 1) || '0'}`;
}

/**
 * JS cannot tell 1 from 1.0, so integer-valued numbers are printed the way Python prints what it
 * parsed from a JS-produced JSON text: plain digits below 1e21 (an int), float repr above.
 */
function pythonNumber(n: number): string {
  return Number.isInteger(n) && Math.abs(n) < 1e21 ? String(n) : pythonFloat(n);
}

/** Python sorts str keys by code point; JS's default sort compares UTF-16 units. */
function compareCodePoints(a: string, b: string): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointRank(x) - codePointRank(y);
  }
  return a.length - b.length;
}

/** Moves surrogates (astral code points) above U+E000–U+FFFF so unit order matches code-point order. */
function codePointRank(unit: number): number {
  if (unit < 0xd800) return unit;
  return unit >= 0xe000 ? unit - 0x800 : unit + 0x2000;
}

export function pythonCanonicalJson(value: unknown): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      return pythonNumber(value);
    case 'bigint':
      return value.toString();
    case 'string':
      return pythonString(value);
    case 'object': {
      if (Array.isArray(value)) {
        return `[${value.map((item: unknown) => (item === undefined ? 'null' : pythonCanonicalJson(item))).join(',')}]`;
      }
      const entries = Object.entries(value as Record<string, unknown>)
        .filter(([, item]) => item !== undefined)
        .sort(([a], [b]) => compareCodePoints(a, b));
      return `{${entries.map(([k, item]) => `${pythonString(k)}:${pythonCanonicalJson(item)}`).join(',')}}`;
    }
    default:
      throw new TypeError(`pythonCanonicalJson: cannot serialise a ${typeof value}`);
  }
}

// ---------------------------------------------------------------------------------------------

interface RuntimeSnapshot {
  runtime_spec_hash: string;
  runtime_type: unknown;
  agent_image: unknown;
  agent_command: unknown;
  services: unknown;
  sandbox: unknown;
  scorers: unknown[];
  run_case_id: number;
  generated_at: number;
}

/**
 * §3.7, except that secrets are redacted (§13.14): the original stored evaluator api_keys here.
 * The hash is still over the raw spec so it matches rows the Python consumer wrote.
 */
export function buildRuntimeSnapshot(p: {
  runtimeSpecRaw: Record<string, unknown>;
  scorers: unknown[];
  runCaseId: number;
  generatedAtUnixSeconds: number;
  sha256Hex: (s: string) => string;
}): RuntimeSnapshot {
  const spec = p.runtimeSpecRaw;
  return {
    runtime_spec_hash: p.sha256Hex(pythonCanonicalJson(spec)),
    runtime_type: spec.runtime_type ?? 'agno_docker',
    agent_image: spec.agent_image ?? null,
    agent_command: spec.agent_command ?? null,
    services: redactSecrets(spec.services ?? []),
    sandbox: redactSecrets(spec.sandbox ?? {}),
    scorers: redactSecrets(p.scorers),
    run_case_id: p.runCaseId,
    generated_at: Math.floor(p.generatedAtUnixSeconds),
  };
}
