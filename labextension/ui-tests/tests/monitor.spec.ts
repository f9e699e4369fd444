import { expect, test } from '@jupyterlab/galata';
import type { APIRequestContext, Locator } from '@playwright/test';

import { runNotebook, screenshot } from './utils';

/** Rows of iris whose petal length (feature "2") is shifted far from the training data: drift. */
function shiftedRows(count: number): number[][] {
  return Array.from({ length: count }, (_, i) => [
    5 + (i % 10) / 10,
    3 + (i % 5) / 10,
    7 + (i % 7) / 10,
    1 + (i % 3) / 10
  ]);
}

/** Send `requests` predictions of 20 rows each to the model server itself. */
async function sendTraffic(
  request: APIRequestContext,
  url: string,
  requests: number
): Promise<void> {
  for (let i = 0; i < requests; i++) {
    const answer = await request.post(`${url}/predict`, {
      data: { instances: shiftedRows(20) }
    });
    expect(answer.status()).toBe(200);
  }
}

/** The data marks (line points, bars) a chart of the monitor view has drawn. */
function marks(monitor: Locator, chart: string): Locator {
  return monitor.locator(
    `[data-chart="${chart}"] svg .mark-symbol.role-mark path, ` +
      `[data-chart="${chart}"] svg .mark-rect.role-mark path`
  );
}

test.describe('Monitor view', () => {
  test('shows live charts of a running server', async ({
    page,
    tmpPath,
    request
  }, testInfo) => {
    test.setTimeout(4 * 60 * 1000);

    // 1. a notebook captures "ui-monitor" with its training rows as the drift reference
    await runNotebook(page, tmpPath, 'ui-monitor.ipynb');
    await expect(
      page.locator('.jp-OutputArea-output', { hasText: 'Captured ui-monitor:' })
    ).toBeVisible({ timeout: 120 * 1000 });

    // 2. serve it from the sidebar
    await page.sidebar.openTab('notebook-deploy-sidebar');
    const sidebar = page.locator('#notebook-deploy-sidebar');
    await page.sidebar.setWidth(480, 'left');
    await sidebar.getByRole('button', { name: 'Refresh deployments' }).click();
    await sidebar
      .locator('.nd-Bundle[data-bundle="ui-monitor"] .nd-Version')
      .first()
      .click();
    await sidebar
      .locator('.nd-Details')
      .getByRole('button', { name: /^Serve ui-monitor:/ })
      .click();
    const server = sidebar.locator('.nd-Server', { hasText: 'ui-monitor' });
    await expect(server.getByLabel('Server status')).toHaveText('running', {
      timeout: 90 * 1000
    });
    const url = (await server.locator('a.nd-Url').textContent())!.trim();

    // 3. traffic, then the monitor view: every chart drawn, requests per second with points
    await sendTraffic(request, url, 10); // 200 rows: past the drift window's minimum of 100
    await server.getByLabel(/^Monitor ui-monitor:/).click();
    const monitor = server.getByLabel(/^Monitor of ui-monitor:/);
    for (const chart of ['requests', 'latency', 'errors', 'batches']) {
      await expect(monitor.locator(`[data-chart="${chart}"] svg`)).toBeVisible({
        timeout: 30 * 1000
      });
    }
    await sendTraffic(request, url, 5);
    await expect(marks(monitor, 'requests').first()).toBeVisible({
      timeout: 30 * 1000
    });
    // 4. drift: the shifted feature's bar, with the threshold marked
    const drift = monitor.locator('[data-chart="drift"]');
    await expect(drift).toContainText('threshold 0.2');
    await expect(marks(monitor, 'drift')).not.toHaveCount(0, {
      timeout: 30 * 1000
    });
    await expect(drift.locator('svg .mark-rule.role-mark line')).toHaveCount(1);
    await screenshot(page, testInfo, '12-monitor-live', monitor);

    // 5. more traffic: the polled charts grow by themselves
    const before = await marks(monitor, 'requests').count();
    await sendTraffic(request, url, 5);
    await expect
      .poll(async () => marks(monitor, 'requests').count(), {
        timeout: 30 * 1000
      })
      .toBeGreaterThan(before);
    await sendTraffic(request, url, 5);
    await page.waitForTimeout(2500); // one more read
    await screenshot(page, testInfo, '13-monitor-grown', monitor);

    // 6. closed: no more reads of the monitor route
    await server.getByLabel(/^Monitor ui-monitor:/).click();
    await expect(monitor).toHaveCount(0);
    let reads = 0;
    page.on('request', r => {
      if (r.url().includes('/monitor')) {
        reads += 1;
      }
    });
    await page.waitForTimeout(5000);
    expect(reads).toBe(0);
    await server.getByRole('button', { name: /^Stop ui-monitor:/ }).click();
    await expect(server.getByLabel('Server status')).toHaveText('stopped', {
      timeout: 30 * 1000
    });
  });
});
