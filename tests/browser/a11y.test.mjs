// Accessibility: axe-core (npm) audits the page at start and with results shown (labels, names,
// roles, colour contrast), and every control is reachable with the keyboard and shows where the
// focus is. axe is injected with CSP bypassed in this test's browser context only; the other
// tests keep the page's CSP.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { serveStatic, launch, openPage, screenshot, sharedData, waitForWorker, pick } from './harness.mjs';

const axePath = createRequire(import.meta.url).resolve('axe-core/axe.min.js');
const chest = join(sharedData, 'chest-xray-pneumonia');
const available = existsSync(chest);

/** Violations of WCAG 2.1 A/AA rules with a serious or critical impact, as readable lines. */
async function audit(page) {
  await page.addScriptTag({ path: axePath });
  const result = await page.evaluate(() => globalThis.axe.run(document, {
    runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
  }));
  return result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`);
}

let server;
before(async () => { server = await serveStatic(); });
after(async () => { await server?.close(); });

test('the page passes axe and works from the keyboard', { timeout: 900_000 }, async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page, record } = await openPage(browser, server.origin, undefined, { bypassCSP: true });
    await page.goto(server.origin + '/');
    await waitForWorker(page);
    assert.deepEqual(await audit(page), [], 'accessibility violations at start');

    // Keyboard: Tab walks through every control; each shows a focus ring.
    const reached = new Set();
    let unringed = [];
    for (let i = 0; i < 60; i++) {
      await page.keyboard.press('Tab');
      const focused = await page.evaluate(() => {
        const el = document.activeElement;
        if (!el || el === document.body) return null;
        const style = getComputedStyle(el);
        const ring = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0;
        return { id: el.dataset.testid ?? el.tagName.toLowerCase(), ring };
      });
      if (!focused) continue;
      reached.add(focused.id);
      if (!focused.ring) unringed.push(focused.id);
    }
    for (const id of ['add-class', 'class-name', 'class-files', 'folder-files', 'export-project', 'import-project']) {
      assert.ok(reached.has(id), `${id} is not reachable with Tab (reached: ${[...reached].join(', ')})`);
    }
    assert.deepEqual(unringed, [], 'focused controls without a visible focus ring');
    // Enter on the focused "Add a class" button adds a class.
    await page.getByTestId('add-class').focus();
    await page.keyboard.press('Enter');
    assert.equal(await page.getByTestId('class-card').count(), 3);
    await page.getByRole('button', { name: /Remove class Class 3/ }).focus();
    await page.keyboard.press('Enter');
    assert.equal(await page.getByTestId('class-card').count(), 2);

    if (available) {
      // With results on screen: metrics tables, confusion matrix, charts, threshold slider.
      const cards = page.getByTestId('class-card');
      await cards.nth(0).getByTestId('class-files').setInputFiles(pick(join(chest, 'train', 'NORMAL'), 3));
      await cards.nth(1).getByTestId('class-files').setInputFiles(pick(join(chest, 'train', 'PNEUMONIA'), 3));
      await page.locator('[data-testid="embed-status"][data-pending="0"]').waitFor({ timeout: 300_000 });
      // The automatic recipe: its table of candidates is audited too.
      await page.getByTestId('train').click();
      await page.getByTestId('metric-accuracy').waitFor({ timeout: 300_000 });
      await page.getByTestId('search-table').waitFor();
      const before = Number(await page.getByTestId('threshold').inputValue());
      await page.getByTestId('threshold').focus();
      await page.keyboard.press('ArrowRight');
      const after = Number(await page.getByTestId('threshold').inputValue());
      assert.ok(Math.abs(after - before - 0.01) < 1e-9 || (before >= 0.99 && after === before), `${before} → ${after}`);
      await screenshot(page, 'a11y-results');
      assert.deepEqual(await audit(page), [], 'accessibility violations with results shown');
    } else {
      console.log(`SKIP the audit with results: no shared medical images at ${chest}`);
    }
    assert.deepEqual(record.foreign, []);
    assert.deepEqual(record.errors, []);
  } finally {
    await browser.close();
  }
});
