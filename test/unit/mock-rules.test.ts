import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseMockConfig, type MockConfig } from '../../src/domain/message';
import {
  compilePythonPattern,
  handlerResponseHead,
  interceptsHttpsOrigin,
  matchRule,
  renderStaticResponse,
  ruleLabel,
  splitUrl,
} from '../../src/domain/mock-rules';

function config(raw: unknown): MockConfig {
  const parsed = parseMockConfig(raw);
  assert.ok(parsed);
  return parsed;
}

function matched(raw: unknown, method: string, url: string): string | undefined {
  const hit = matchRule(config(raw).rules, { method, url });
  return hit && ruleLabel(hit.rule, hit.index);
}

describe('splitUrl (Python urlsplit semantics)', () => {
  test('keeps an explicit port in the netloc, even the default one, and defaults the path to /', () => {
    assert.deepEqual(splitUrl('http://h:80'), { scheme: 'http', netloc: 'h:80', path: '/', query: '' });
    assert.deepEqual(splitUrl('HTTPS://api.x.com/v1/x?q=1&r=#frag'), {
      scheme: 'https',
      netloc: 'api.x.com',
      path: '/v1/x',
      query: 'q=1&r=',
    });
    assert.equal(splitUrl('/relative'), null);
  });
});

describe('matchRule', () => {
  const rules = {
    rules: [
      { name: 'method', match: { methods: ['delete'] }, response: {} },
      { name: 'url', match: { url: 'http://h/p?q=1' }, response: {} },
      { name: 'url_regex', match: { url_regex: 'items/\\d+' }, response: {} },
      { name: 'host', match: { host: 'api.x.com:8080' }, response: {} },
      { name: 'path', match: { path: '/v1/x' }, response: {} },
      { name: 'path_regex', match: { path_regex: '^/re/[a-z]+$' }, response: {} },
      { name: 'and', match: { methods: ['PUT'], host: 'and.test', path: '/both' }, response: {} },
    ],
  };

  test('each criterion on its own', () => {
    assert.equal(matched(rules, 'DELETE', 'http://any/where'), 'method');
    assert.equal(matched(rules, 'GET', 'http://h/p?q=1'), 'url');
    assert.equal(matched(rules, 'GET', 'http://h/p?q=2'), undefined, 'url is exact equality');
    assert.equal(
      matched(rules, 'GET', 'https://shop.test/api/items/42/details'),
      'url_regex',
      'unanchored search',
    );
    assert.equal(matched(rules, 'GET', 'http://api.x.com:8080/anything'), 'host');
    assert.equal(matched(rules, 'GET', 'http://api.x.com/anything'), undefined, 'host includes the port');
    assert.equal(matched(rules, 'GET', 'http://a/v1/x?ignored=query'), 'path', 'path excludes the query');
    assert.equal(matched(rules, 'GET', 'http://a/re/abc'), 'path_regex');
    assert.equal(matched(rules, 'GET', 'http://a/re/abc1'), undefined);
  });

  test('criteria are ANDed', () => {
    assert.equal(matched(rules, 'PUT', 'http://and.test/both'), 'and');
    assert.equal(matched(rules, 'POST', 'http://and.test/both'), undefined);
    assert.equal(matched(rules, 'PUT', 'http://other.test/both'), undefined);
  });

  test('first match wins; a rule without criteria matches everything; unnamed rules are labelled by position', () => {
    const raw = {
      rules: [
        { match: { path: '/first' }, response: {} },
        { name: 'catch-all', response: {} },
        { name: 'never', match: { path: '/first' }, response: {} },
      ],
    };
    assert.equal(matched(raw, 'GET', 'http://x/first'), 'rules[0]');
    assert.equal(matched(raw, 'PATCH', 'https://y/anything'), 'catch-all');
    assert.equal(matchRule([], { method: 'GET', url: 'http://x/' }), undefined);
  });

  test('Python-only regex spellings are translated; an uncompilable pattern never matches', () => {
    assert.equal(
      matched({ rules: [{ match: { url_regex: '(?i)EXAMPLE\\.COM' } }] }, 'GET', 'http://example.com/'),
      'rules[0]',
    );
    assert.equal(
      matched({ rules: [{ match: { path_regex: '^/(?P<id>\\d+)/(?P=id)\\Z' } }] }, 'GET', 'http://x/7/7'),
      'rules[0]',
    );
    assert.equal(matched({ rules: [{ match: { path_regex: '\\A/a' } }] }, 'GET', 'http://x/b/a'), undefined);
    assert.equal(compilePythonPattern('(unclosed'), null);
    assert.equal(matched({ rules: [{ match: { path_regex: '(unclosed' } }] }, 'GET', 'http://x/'), undefined);
    assert.ok(compilePythonPattern('\\\\A')?.test('\\A'), 'an escaped backslash before A stays literal');
  });
});

describe('renderStaticResponse', () => {
  test('json: default content type and status, non-ASCII kept', () => {
    const [rule] = config({ rules: [{ response: { json: { pong: true, city: 'Zürich' } } }] }).rules;
    assert.ok(rule);
    assert.deepEqual(renderStaticResponse(rule.response), {
      status: 200,
      headers: { 'content-type': 'application/json' },
      body: '{"pong":true,"city":"Zürich"}',
    });
  });

  test('text: default content type; rule headers stringified and a given content type kept', () => {
    const [rule] = config({
      rules: [
        {
          response: {
            type: 'text',
            status: 418,
            text: 'teapot',
            headers: { 'Content-Type': 'text/html', 'X-N': 5 },
          },
        },
      ],
    }).rules;
    assert.ok(rule);
    assert.deepEqual(renderStaticResponse(rule.response), {
      status: 418,
      headers: { 'Content-Type': 'text/html', 'X-N': '5' },
      body: 'teapot',
    });
    const [plain] = config({ rules: [{ response: { type: 'text', text: 'hi' } }] }).rules;
    assert.ok(plain);
    assert.equal(renderStaticResponse(plain.response).headers['content-type'], 'text/plain; charset=utf-8');
  });

  test('unknown types answer like json', () => {
    const [rule] = config({ rules: [{ response: { type: 'xml', json: [1] } }] }).rules;
    assert.ok(rule);
    assert.equal(renderStaticResponse(rule.response).body, '[1]');
  });
});

describe('handlerResponseHead', () => {
  const [rule] = config({
    rules: [{ response: { type: 'python', status: 201, headers: { 'X-Rule': 'r', 'x-both': 'rule' } } }],
  }).rules;
  assert.ok(rule);

  test('handler headers win over rule headers (case-insensitively); status defaults to the rule status', () => {
    assert.deepEqual(
      handlerResponseHead(rule.response, {
        status: null,
        headers: { 'X-Both': 'handler' },
        contentType: 'application/json',
      }),
      { status: 201, headers: { 'X-Rule': 'r', 'X-Both': 'handler', 'content-type': 'application/json' } },
    );
  });

  test('a handler status and content type win; body_base64 gets no default content type', () => {
    assert.deepEqual(
      handlerResponseHead(rule.response, {
        status: 404,
        headers: { 'content-type': 'image/png' },
        contentType: 'text/plain; charset=utf-8',
      }),
      { status: 404, headers: { 'X-Rule': 'r', 'x-both': 'rule', 'content-type': 'image/png' } },
    );
    assert.equal(
      handlerResponseHead(rule.response, { status: null, headers: {}, contentType: null }).headers[
        'content-type'
      ],
      undefined,
    );
  });
});

describe('interceptsHttpsOrigin', () => {
  test('with passthrough only origins a rule names are decrypted', () => {
    const c = config({
      passthrough: true,
      rules: [
        { match: { host: 'api.x.com' } },
        { match: { url: 'https://pay.test:8443/charge' } },
        { match: { url_regex: 'https://api\\.example\\.com/news.*' } },
        { match: { path: '/v1/chat/completions' } },
      ],
    });
    assert.equal(interceptsHttpsOrigin(c, 'api.x.com', 443), true);
    assert.equal(
      interceptsHttpsOrigin(c, 'api.x.com', 8443),
      false,
      'host without port means the default port',
    );
    assert.equal(interceptsHttpsOrigin(c, 'pay.test', 8443), true);
    assert.equal(interceptsHttpsOrigin(c, 'pay.test', 443), false);
    assert.equal(interceptsHttpsOrigin(c, 'api.example.com', 443), true, 'the README example works now');
    assert.equal(
      interceptsHttpsOrigin(c, 'api.openai.com', 443),
      false,
      'path-only rules do not decrypt with passthrough',
    );
  });

  test('without passthrough every rule that could match the origin decrypts it', () => {
    const pathOnly = config({ passthrough: false, rules: [{ match: { path: '/v1/chat/completions' } }] });
    assert.equal(interceptsHttpsOrigin(pathOnly, 'api.openai.com', 443), true);
    const elsewhere = config({
      passthrough: false,
      rules: [
        { match: { host: 'other.test' } },
        { match: { url_regex: '^http://plain\\.test/' } },
        { match: { url: 'http://api.x.com/' } },
      ],
    });
    assert.equal(interceptsHttpsOrigin(elsewhere, 'api.x.com', 443), false);
    assert.equal(interceptsHttpsOrigin(config({ passthrough: false, rules: [] }), 'api.x.com', 443), false);
  });

  test('a url_regex matching any https URL names every origin', () => {
    assert.equal(
      interceptsHttpsOrigin(config({ rules: [{ match: { url_regex: '.*' } }] }), 'a.test', 443),
      true,
    );
  });
});

describe('CONTRACT §11 test_parser', () => {
  test('passthrough false and the first rule path /healthz survive the tolerant parse', () => {
    const c = config({
      passthrough: false,
      rules: [
        {
          name: 'health',
          match: { methods: ['GET'], path: '/healthz' },
          response: { type: 'json', status: 200, json: { ok: true } },
        },
      ],
    });
    assert.equal(c.passthrough, false);
    assert.equal(c.rules[0]?.match.path, '/healthz');
    assert.equal(matched(c, 'GET', 'http://127.0.0.1:14318/healthz'), 'health');
  });
});
