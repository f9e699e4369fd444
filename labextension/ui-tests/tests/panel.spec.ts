import { expect, test } from '@jupyterlab/galata';

import { runNotebook, screenshot } from './utils';

/** The ipywidgets panel `nd.panel()` renders in a notebook of a real JupyterLab. */
test.describe('Notebook panel', () => {
  test('nd.panel() shows its buttons and the model variables', async ({ page, tmpPath }, testInfo) => {
    test.setTimeout(3 * 60 * 1000);
    await runNotebook(page, tmpPath, 'ui-panel.ipynb');
    const panel = page.locator('.jp-OutputArea-output .nd-panel').first();
    await expect(panel).toBeVisible({ timeout: 60 * 1000 });
    for (const label of ['Capture', 'Serve locally', 'Push']) {
      // the buttons have an icon before their description
      await expect(panel.getByRole('button', { name: new RegExp(`^\\W*${label}$`) })).toBeVisible();
    }
    const dropdown = panel.locator('.widget-dropdown select').first();
    await expect(dropdown).toBeVisible();
    await expect(dropdown.locator('option', { hasText: 'model' })).toHaveCount(1);
    await screenshot(page, testInfo, '01-panel', panel);
  });
});
