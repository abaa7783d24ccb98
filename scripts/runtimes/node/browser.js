'use strict';
// One headless Chromium per task, driven by playwright-core over CDP. The system binary is launched
// (CHROMIUM_PATH), nothing is downloaded. Memory is capped twice: the container's cgroup limit for
// everything, and V8's heap size per renderer, so a page that allocates without end crashes its
// renderer (a typed `browser_crash`) before the cgroup's OOM killer takes the whole runtime down.

const { createHash } = require('node:crypto');
const { chromium, errors } = require('playwright-core');

const ACTIONS = ['goto', 'click', 'type', 'extract_text', 'screenshot'];
const DEFAULT_ACTION_TIMEOUT_MS = 15_000;

class BrowserActionError extends Error {
  constructor(errorType, message) {
    super(message);
    this.errorType = errorType;
  }
}

function proxySettings() {
  const server = process.env.HTTP_PROXY || process.env.http_proxy;
  if (!server) return undefined;
  return { server, bypass: process.env.NO_PROXY || process.env.no_proxy || undefined };
}

/** Maps what playwright throws to the step's error type. */
function classify(err, action) {
  const message = String(err && err.message ? err.message : err).split('\n')[0];
  if (err instanceof BrowserActionError) return err;
  if (
    /Target (page, context or browser )?(has been )?closed|crash|Browser closed|browser has disconnected/i.test(
      message,
    )
  ) {
    return new BrowserActionError('browser_crash', message);
  }
  if (err instanceof errors.TimeoutError) {
    return new BrowserActionError(action === 'goto' ? 'navigation_timeout' : 'element_not_found', message);
  }
  if (/net::ERR_|NS_ERROR_|Protocol error \(Page\.navigate\)|Cannot navigate/i.test(message)) {
    return new BrowserActionError('navigation_error', message);
  }
  return new BrowserActionError('browser_error', message);
}

class BrowserSession {
  constructor({ memoryMb = 512, actionTimeoutMs = DEFAULT_ACTION_TIMEOUT_MS } = {}) {
    this.memoryMb = memoryMb;
    this.actionTimeoutMs = actionTimeoutMs;
    this.browser = null;
    this.page = null;
    this.crashed = null;
  }

  async open() {
    if (this.page) return this.page;
    try {
      this.browser = await chromium.launch({
        executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium-headless-shell',
        headless: true,
        proxy: proxySettings(),
        timeout: 30_000,
        args: [
          '--disable-dev-shm-usage',
          '--disable-gpu',
          '--no-zygote',
          '--renderer-process-limit=2',
          `--js-flags=--max-old-space-size=${Math.max(64, Math.floor(this.memoryMb / 2))}`,
        ],
      });
    } catch (err) {
      throw new BrowserActionError(
        'browser_crash',
        `the browser did not start: ${String(err.message).split('\n')[0]}`,
      );
    }
    this.browser.on('disconnected', () => {
      this.crashed ??= 'the browser process exited';
    });
    // A mock gateway intercepts TLS with its own CA, which Chromium's NSS store does not know.
    const context = await this.browser.newContext({
      ignoreHTTPSErrors: Boolean(process.env.HTTPS_PROXY || process.env.https_proxy),
    });
    this.page = await context.newPage();
    this.page.on('crash', () => {
      this.crashed = 'the page crashed (renderer out of memory or killed)';
    });
    this.page.setDefaultTimeout(this.actionTimeoutMs);
    this.page.setDefaultNavigationTimeout(this.actionTimeoutMs);
    return this.page;
  }

  /** Runs one action; returns the observation text, throws BrowserActionError. */
  async perform(params) {
    const action = params && params.action;
    if (!ACTIONS.includes(action)) {
      throw new BrowserActionError(
        'invalid_action',
        `unknown browser action ${JSON.stringify(action)}; one of ${ACTIONS.join(', ')}`,
      );
    }
    const page = await this.open();
    const timeout = Number(params.timeout_ms) || this.actionTimeoutMs;
    try {
      const observation = await this.run(page, action, params, timeout);
      if (this.crashed) throw new BrowserActionError('browser_crash', this.crashed);
      return observation;
    } catch (err) {
      if (this.crashed) throw new BrowserActionError('browser_crash', this.crashed);
      throw classify(err, action);
    }
  }

  async run(page, action, p, timeout) {
    const need = (key) => {
      if (typeof p[key] !== 'string' || p[key] === '')
        throw new BrowserActionError('invalid_action', `${action} needs "${key}"`);
      return p[key];
    };
    switch (action) {
      case 'goto': {
        const response = await page.goto(need('url'), { timeout, waitUntil: p.wait_until || 'load' });
        const status = response ? response.status() : 0;
        const text = await page.innerText('body', { timeout }).catch(() => '');
        if (status >= 400) throw new BrowserActionError('navigation_error', `HTTP ${status} for ${p.url}`);
        return `${await page.title()}\n${text}`.trim();
      }
      case 'click':
        await page.click(need('selector'), { timeout });
        await page.waitForLoadState('load', { timeout }).catch(() => undefined);
        return (await page.innerText('body', { timeout }).catch(() => '')).trim();
      case 'type':
        await page.fill(need('selector'), typeof p.text === 'string' ? p.text : String(p.text ?? ''), {
          timeout,
        });
        return `typed ${String(p.text ?? '').length} characters into ${p.selector}`;
      case 'extract_text':
        return (await page.innerText(p.selector || 'body', { timeout })).trim();
      case 'screenshot': {
        const png = await page.screenshot({ timeout, fullPage: Boolean(p.full_page) });
        const sha = createHash('sha256').update(png).digest('hex');
        return JSON.stringify({ format: 'png', bytes: png.length, sha256: sha, url: page.url() });
      }
      default:
        throw new BrowserActionError('invalid_action', `unknown browser action ${action}`);
    }
  }

  async close() {
    await this.browser?.close().catch(() => undefined);
  }
}

module.exports = { BrowserSession, BrowserActionError, ACTIONS };
