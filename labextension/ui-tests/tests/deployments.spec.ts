import { expect, test } from '@jupyterlab/galata';

import { runNotebook, screenshot } from './utils';

/**
 * The whole chain in a real JupyterLab: a notebook captures a model in its kernel, the Deployments
 * sidebar lists it, serves it, sends it a test request and pushes its image to a real registry
 * (ND_UI_REGISTRY, e.g. 127.0.0.1:5000; ND_UI_BASE names a base image there, else the server's default).
 */
const registry = process.env.ND_UI_REGISTRY;
const base = process.env.ND_UI_BASE ?? '';

test.describe('Deployments sidebar', () => {
  test('captures, lists, serves, answers and pushes a model', async ({
    page,
    tmpPath
  }, testInfo) => {
    // tests/test_ui.py starts a real registry and sets it; without one the push cannot be tested
    expect(
      registry,
      'set ND_UI_REGISTRY to a registry address (host:port, plain http)'
    ).toBeTruthy();
    test.setTimeout(6 * 60 * 1000);

    // 1. a notebook trains and captures "ui-iris" with %deploy in the real kernel (with its recipe)
    await runNotebook(page, tmpPath, 'ui-iris.ipynb');
    const output = page.locator('.jp-OutputArea-output').last();
    await expect(output).toContainText('Captured ui-iris:', {
      timeout: 120 * 1000
    });
    await expect(output).toContainText('recipe');

    // 2. the sidebar lists the bundle
    // through its palette command, as a user would from the command palette
    await page.evaluate(() =>
      (
        window as unknown as {
          jupyterapp: { commands: { execute(id: string): Promise<unknown> } };
        }
      ).jupyterapp.commands.execute('notebook-deploy:open')
    );
    expect(await page.sidebar.isTabOpen('notebook-deploy-sidebar')).toBe(true);
    const sidebar = page.locator('#notebook-deploy-sidebar');
    await expect(sidebar).toBeVisible();
    await page.sidebar.setWidth(420, 'left'); // room for the screenshots
    await sidebar.getByRole('button', { name: 'Refresh deployments' }).click();
    const bundles = sidebar.getByRole('list', { name: 'Model bundles' });
    await expect(bundles).toContainText('ui-iris');
    const version = sidebar
      .locator('.nd-Bundle[data-bundle="ui-iris"] .nd-Version')
      .first();
    await expect(version).toContainText('latest');
    await version.click();
    const details = sidebar.locator('.nd-Details');
    await expect(details).toContainText('LogisticRegression');
    await expect(details).toContainText('scikit-learn==');
    await screenshot(page, testInfo, '01-sidebar-bundle', details);

    // 3. serve it: a running endpoint with its URL
    await details.getByRole('button', { name: /^Serve ui-iris:/ }).click();
    const server = sidebar.locator('.nd-Server').first();
    await expect(server.getByLabel('Server status')).toHaveText('running', {
      timeout: 90 * 1000
    });
    await expect(server.locator('a.nd-Url')).toHaveText(
      /^http:\/\/127\.0\.0\.1:\d+$/
    );
    await screenshot(page, testInfo, '02-endpoint-running', server);
    const [docs] = await Promise.all([
      page.waitForEvent('popup'),
      server.getByRole('button', { name: /^Open API docs of ui-iris:/ }).click()
    ]);
    await expect(docs).toHaveURL(/^http:\/\/127\.0\.0\.1:\d+\/docs/);
    await docs.close();
    const log = server.locator('summary', { hasText: 'Log' });
    await log.click();
    await expect(server.getByLabel(/^Log of ui-iris:/)).toContainText(
      'Serving ui-iris:'
    );
    await log.click(); // closed again, to keep the screenshots short

    // 4. a test request, prefilled from the bundle's sample, answered by the model server
    const body = server.getByLabel('Test request body');
    await expect(body).toHaveValue(/"instances"/, { timeout: 30 * 1000 });
    await server.getByRole('button', { name: /^Send a test request/ }).click();
    const answer = server.getByLabel('Test answer');
    await expect(answer).toContainText('predictions', { timeout: 30 * 1000 });
    await expect(server.locator('.nd-Answer .nd-Badge')).toHaveText('HTTP 200');
    await screenshot(page, testInfo, '03-test-answer', answer);

    // 5. a malformed image reference: the server refuses it (400) and its message is shown
    await details.getByRole('button', { name: /^Push ui-iris:/ }).click();
    const dialog = page.locator('.jp-Dialog');
    await dialog.getByLabel('Image reference').fill('Not A/valid ref');
    await dialog.locator('.jp-Dialog-button.jp-mod-accept').click();
    const toast = page.locator('.Toastify__toast', {
      hasText: 'is not a valid repository name'
    });
    await expect(toast).toBeVisible();
    await page.waitForTimeout(1000); // the toast slides in
    await screenshot(page, testInfo, '04-push-refused');

    // 6. push its image to the registry: progress per layer, then 100 % and succeeded
    await details.getByRole('button', { name: /^Push ui-iris:/ }).click();
    await dialog.getByLabel('Image reference').fill(`${registry}/ui-iris:v1`);
    await dialog.getByLabel('Backend').selectOption('daemonless');
    await dialog.getByLabel('Base image').fill(base);
    await dialog.locator('.jp-Dialog-button.jp-mod-accept').click();
    const task = sidebar.locator('.nd-Task').first();
    await expect(task).toContainText(`${registry}/ui-iris:v1`);
    await expect(task.locator('.nd-Layer').first()).toBeVisible({
      timeout: 240 * 1000
    });
    await screenshot(page, testInfo, '05-push-progress', task);
    await expect(task).toHaveAttribute('data-state', 'succeeded', {
      timeout: 240 * 1000
    });
    await expect(task.getByRole('progressbar').first()).toHaveAttribute(
      'aria-valuenow',
      '100'
    );
    await expect(task.locator('.nd-Progress-text').first()).toHaveText('100%');
    await expect(task.getByLabel('Pushed image')).toContainText('sha256:');
    await screenshot(page, testInfo, '06-push-succeeded', task);

    // 7. move a tag to this version (a rollback, when it is an older one)
    await details
      .getByRole('button', { name: /^Move a tag of ui-iris:/ })
      .click();
    await dialog.getByLabel('Tag', { exact: true }).fill('prod');
    await dialog.locator('.jp-Dialog-button.jp-mod-accept').click();
    await expect(version.locator('.nd-Tag', { hasText: 'prod' })).toBeVisible();
    await screenshot(page, testInfo, '07-tag-moved', version);

    // 8. verify it as a task: %deploy kept the recipe, which replays in a fresh kernel to the same outputs
    await details.getByRole('button', { name: /^Verify ui-iris:/ }).click();
    const verify = sidebar
      .locator('.nd-Task', { hasText: 'Verify ui-iris:' })
      .first();
    await expect(verify).toHaveAttribute('data-state', /succeeded|failed/, {
      timeout: 120 * 1000
    });
    await expect(verify.locator('[aria-label="Verification"]')).toContainText(
      'the rebuilt model gives the stored outputs'
    );
    await screenshot(page, testInfo, '08-verify', verify);

    // 9. the endpoint is in JupyterLab's Running sidebar too; stop it from the Deployments sidebar
    await page.sidebar.openTab('jp-running-sessions');
    const running = page.locator('#jp-running-sessions');
    await expect(running).toContainText('Model servers');
    await expect(running.locator('.nd-RunningItem')).toContainText('ui-iris:');
    await screenshot(page, testInfo, '09-running-sidebar');
    await page.sidebar.openTab('notebook-deploy-sidebar');
    await server.getByRole('button', { name: /^Stop ui-iris:/ }).click();
    await expect(server.getByLabel('Server status')).toHaveText('stopped', {
      timeout: 30 * 1000
    });
  });

  test('compares two versions of a model', async ({
    page,
    tmpPath
  }, testInfo) => {
    test.setTimeout(4 * 60 * 1000);

    // 1. a notebook captures two versions of "ui-compare"; the second no longer reads the petal width
    await runNotebook(page, tmpPath, 'ui-compare.ipynb');
    await expect(
      page.locator('.jp-OutputArea-output', {
        hasText: 'Captured ui-compare:'
      })
    ).toHaveCount(2, { timeout: 150 * 1000 });

    // 2. the newest version's details: compare it with the other one
    await page.sidebar.openTab('notebook-deploy-sidebar');
    const sidebar = page.locator('#notebook-deploy-sidebar');
    await page.sidebar.setWidth(420, 'left');
    await sidebar.getByRole('button', { name: 'Refresh deployments' }).click();
    const versions = sidebar.locator(
      '.nd-Bundle[data-bundle="ui-compare"] .nd-Version'
    );
    await expect(versions).toHaveCount(2);
    await versions.first().click();
    const details = sidebar.locator('.nd-Details');
    const choice = details.getByLabel(/^Compare ui-compare:\w+ with$/);
    await expect(choice.locator('option')).toHaveCount(2); // "Compare with…" and the older version
    await choice.selectOption({ index: 1 });

    // 3. the breaking change comes first, marked; the old sample's agreement as a percentage
    const view = details.locator('.nd-Comparison');
    await expect(view).toHaveAttribute('data-breaking', 'true', {
      timeout: 60 * 1000
    });
    const first = view.getByLabel('Schema changes').locator('li').first();
    await expect(first).toHaveClass('nd-mod-breaking');
    await expect(first).toContainText("column 'petal width (cm)' is gone");
    await expect(
      view.getByLabel('Sample agreement', { exact: true })
    ).toHaveText(/^\d+(\.\d)?% of 20 rows/);
    await screenshot(page, testInfo, '10-compare', view);

    // 4. measured: each version started in a fresh Python, side by side
    await view
      .getByRole('button', { name: 'Measure start, latency, memory' })
      .click();
    await expect(view.getByLabel('Start', { exact: true })).toHaveText(
      /^\d+\.\d\d s → \d+\.\d\d s/,
      { timeout: 120 * 1000 }
    );
    await expect(view.getByLabel('Peak memory', { exact: true })).toContainText(
      'MB'
    );
    await screenshot(page, testInfo, '11-compare-measured', view);
  });
});
