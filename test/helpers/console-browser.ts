/**
 * The web console's browser tests' shared parts (docs/console.md, "Tests"):
 * Debian's Chromium driven by playwright-core, a fresh profile per run,
 * dialogs recorded (a hostile value that ran script would open one), and
 * screenshots into docs/console/ when UPDATE_CONSOLE_SCREENSHOTS=1.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { CONSOLE_ASSETS_DIR } from '../../src/http/routes/console.js';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const SCREENSHOTS = process.env.UPDATE_CONSOLE_SCREENSHOTS === '1' ? new URL('../../docs/console/', import.meta.url).pathname : null;

export interface ConsoleBrowser {
  context: BrowserContext;
  page: Page;
  /** The message of every dialog the page opened (each dismissed). */
  dialogs: string[];
  /** Saves the page as docs/console/<name>.png when UPDATE_CONSOLE_SCREENSHOTS=1. */
  screenshot(name: string): Promise<void>;
  close(): Promise<void>;
}

/** Fails, not skips, when Chromium or the built console is missing. */
export function assertConsoleTestable(): void {
  assert.ok(existsSync(CHROMIUM), `Chromium is missing at ${CHROMIUM}: apt-get install chromium (the console's browser tests need it)`);
  assert.ok(existsSync(path.join(CONSOLE_ASSETS_DIR, 'index.html')), `the console is not built in ${CONSOLE_ASSETS_DIR}: run \`npm run build\``);
}

/** Chromium at 1280×800 on a fresh profile. */
export async function launchConsoleBrowser(): Promise<ConsoleBrowser> {
  const profile = await mkdtemp(path.join(tmpdir(), 'oidc-broker-chromium-'));
  const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  const page = context.pages()[0] ?? (await context.newPage());
  const dialogs: string[] = [];
  page.on('dialog', (dialog) => {
    dialogs.push(dialog.message());
    void dialog.dismiss();
  });
  return {
    context,
    page,
    dialogs,
    async screenshot(name) {
      if (SCREENSHOTS !== null) await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`) });
    },
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}
