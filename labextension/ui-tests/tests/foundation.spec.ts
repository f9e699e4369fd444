import { expect, test } from '@jupyterlab/galata';
import * as path from 'path';

import { runNotebook, screenshot } from './utils';

/**
 * Foundation models in the sidebar, in a real JupyterLab: a notebook builds a tiny GPT-2 and a tiny ViT
 * image classifier in its kernel (tests/tiny_models.py, found through ND_UI_TESTS) and captures both;
 * the sidebar serves them, streams the generator's answer to a prompt, and sends the classifier a
 * picture picked with the file input (tests/data/images/hopper.jpg, from Pillow's test images).
 */
const tests =
  process.env.ND_UI_TESTS ?? path.resolve(__dirname, '..', '..', '..', 'tests');

test.describe('Foundation models in the sidebar', () => {
  test('streams a generation and sends an uploaded image', async ({
    page,
    tmpPath
  }, testInfo) => {
    test.setTimeout(6 * 60 * 1000);

    // 1. the notebook captures ui-gen and ui-pets, and prints the generator's own greedy answer
    await runNotebook(page, tmpPath, 'ui-foundation.ipynb');
    await expect(
      page.locator('.jp-OutputArea-output', { hasText: 'Captured ui-' })
    ).toHaveCount(2, { timeout: 240 * 1000 });
    const printed = await page
      .locator('.jp-OutputArea-output', { hasText: 'greedy answer: [' })
      .innerText();
    const greedy = /greedy answer: \[(.*)\]/.exec(printed)?.[1] ?? '';
    expect(greedy).not.toBe('');

    await page.sidebar.openTab('notebook-deploy-sidebar');
    const sidebar = page.locator('#notebook-deploy-sidebar');
    await page.sidebar.setWidth(420, 'left');
    await sidebar.getByRole('button', { name: 'Refresh deployments' }).click();
    /** Serve the newest version of `name` from its details; its running endpoint. */
    const serve = async (name: string) => {
      await sidebar
        .locator(`.nd-Bundle[data-bundle="${name}"] .nd-Version`)
        .first()
        .click();
      await sidebar
        .locator('.nd-Details')
        .getByRole('button', { name: new RegExp(`^Serve ${name}:`) })
        .click();
      const server = sidebar.locator('.nd-Server', { hasText: `${name}:` });
      await expect(server.getByLabel('Server status')).toHaveText('running', {
        timeout: 120 * 1000
      });
      return server;
    };

    // 2. serve the generator; its answer to a prompt streams in and ends with its token count
    const generator = await serve('ui-gen');
    await generator.locator('summary', { hasText: 'Generate text' }).click();
    await generator.getByLabel('Prompt').fill('hello world');
    await generator
      .getByRole('button', { name: /^Generate with ui-gen:/ })
      .click();
    await expect(generator.getByLabel('Generation end')).toHaveText(
      /^length, \d+ tokens$/,
      { timeout: 60 * 1000 }
    );
    // the text the server streamed, whole: the pipeline's own answer in the kernel
    await expect(generator.getByLabel('Generated text')).toHaveText(greedy);
    await screenshot(page, testInfo, '14-generated', generator);

    // 3. serve the image classifier; a picture picked with the file input is its test request
    const pets = await serve('ui-pets');
    await pets
      .getByLabel('image files to send')
      .setInputFiles(path.join(tests, 'data', 'images', 'hopper.jpg'));
    await expect(pets.getByLabel('Picked files')).toHaveText('hopper.jpg');
    await pets.getByRole('button', { name: /^Send a test request/ }).click();
    const answer = pets.getByLabel('Test answer');
    await expect(answer).toContainText('predictions', { timeout: 30 * 1000 });
    for (const label of ['cat', 'dog', 'bird']) {
      await expect(answer).toContainText(label);
    }
    await expect(pets.locator('.nd-Answer .nd-Badge')).toHaveText('HTTP 200');
    await screenshot(page, testInfo, '15-image-answer', pets);

    for (const [server, ref] of [
      [generator, 'ui-gen'],
      [pets, 'ui-pets']
    ] as const) {
      await server
        .getByRole('button', { name: new RegExp(`^Stop ${ref}:`) })
        .click();
      await expect(server.getByLabel('Server status')).toHaveText('stopped', {
        timeout: 30 * 1000
      });
    }
  });
});
