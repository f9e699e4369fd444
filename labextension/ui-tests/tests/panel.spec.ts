import { expect, test } from '@jupyterlab/galata';

import { runNotebook, screenshot } from './utils';

/** The ipywidgets panel `nd.panel()` in a notebook of a real JupyterLab, driven by clicks in the browser. */
test.describe('Notebook panel', () => {
  test('nd.panel() captures, serves, answers a test request and stops', async ({
    page,
    tmpPath
  }, testInfo) => {
    test.setTimeout(4 * 60 * 1000);
    await runNotebook(page, tmpPath, 'ui-panel.ipynb');
    const panel = page.locator('.jp-OutputArea-output .nd-panel').first();
    await expect(panel).toBeVisible({ timeout: 60 * 1000 });
    for (const label of ['Capture', 'Serve locally', 'Push']) {
      // the buttons have an icon before their description
      await expect(
        panel.getByRole('button', { name: new RegExp(`^\\W*${label}$`) })
      ).toBeVisible();
    }
    const dropdown = panel.locator('.widget-dropdown select').first();
    await expect(dropdown).toBeVisible();
    await expect(dropdown.locator('option', { hasText: 'model' })).toHaveCount(
      1
    );
    await screenshot(page, testInfo, '01-panel', panel);

    const button = (label: string) =>
      panel.getByRole('button', { name: new RegExp(`^\\W*${label}$`) });
    const status = panel.locator('.nd-status');
    await panel.getByRole('textbox', { name: 'Name' }).fill('ui-panel');
    await button('Capture').click();
    await expect(status).toContainText('captured ui-panel:', {
      timeout: 120 * 1000
    });
    await screenshot(page, testInfo, '02-panel-captured', panel);

    await button('Serve locally').click();
    await expect(status).toContainText('running', { timeout: 120 * 1000 });
    await expect(status.locator('a[href^="http://127.0.0.1:"]')).toBeVisible();

    await expect(button('Send')).toBeEnabled();
    await button('Send').click();
    const response = panel.locator('.nd-response');
    await expect(response).toContainText('"predictions": [0, 0]', {
      timeout: 60 * 1000
    });
    await screenshot(page, testInfo, '03-panel-answered', panel);

    await button('Stop').click();
    await expect(status).not.toContainText('running', { timeout: 60 * 1000 });
  });
});
