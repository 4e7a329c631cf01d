// What every browser script here shares: Debian's Chromium (`$CHROMIUM`, default
// /usr/bin/chromium; never a browser playwright would download) started headless with a
// throwaway profile, the page's console errors collected, a hard timeout that still prints the
// result, and the clean-up.
//
// A script builds its `result` object and hands its work to `runInChromium`, which prints
// `result` as one JSON line on stdout and exits the process: 0, or 1 when the work threw (its
// message becomes `result.error`), returned 1, or ran past the hard timeout.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

// Headless on loopback: no GPU, no QUIC, no background traffic; media plays without a gesture.
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];

/**
 * Run `work(page)` in a fresh headless Chromium, then print `result` and exit (never returns).
 * `timeoutMs`: the hard limit for the whole run; `viewport`; `args`: extra Chromium flags;
 * `errorPrefix`: put before a thrown error's message in `result.error`.
 */
export async function runInChromium(result, { timeoutMs, viewport, args = [], errorPrefix = '' }, work) {
  const userDataDir = mkdtempSync(join(tmpdir(), 'tidecast-chromium-'));
  let context = null;
  let exitCode = 0;
  const hardTimer = setTimeout(() => {
    result.error = `hard timeout after ${Math.round(timeoutMs / 1000)} s`;
    process.stdout.write(JSON.stringify(result) + '\n');
    process.exit(1);
  }, timeoutMs);
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      args: [...ARGS, ...args],
      viewport,
    });
    result.browser = context.browser() ? context.browser().version() : null;
    const page = context.pages()[0] || (await context.newPage());
    exitCode = (await work(page)) || 0;
  } catch (e) {
    result.error = `${errorPrefix}${e && e.message ? e.message : e}`;
    exitCode = 1;
  } finally {
    clearTimeout(hardTimer);
    if (context) await context.close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(exitCode);
}

/** The page's console errors and warnings and its uncaught errors, at most `max` lines. */
export function collectConsole(page, max = 30) {
  const lines = [];
  page.on('console', (m) => {
    if ((m.type() === 'error' || m.type() === 'warning') && lines.length < max) {
      lines.push(`${m.type()}: ${m.text()}`.slice(0, 400));
    }
  });
  page.on('pageerror', (e) => lines.length < max && lines.push(`pageerror: ${e.message}`));
  return lines;
}
