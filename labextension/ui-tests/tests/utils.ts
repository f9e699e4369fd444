import { IJupyterLabPageFixture } from '@jupyterlab/galata';
import type { Locator, TestInfo } from '@playwright/test';
import * as path from 'path';

/** Upload a notebook of ui-tests/notebooks into the test's folder, open it and run all its cells. */
export async function runNotebook(
  page: IJupyterLabPageFixture,
  tmpPath: string,
  name: string
): Promise<void> {
  await page.contents.uploadFile(
    path.resolve(__dirname, '..', 'notebooks', name),
    `${tmpPath}/${name}`
  );
  await page.notebook.openByPath(`${tmpPath}/${name}`);
  await page.notebook.activate(name);
  await page.notebook.run();
}

/** Save a screenshot of the whole page as NN-step.png in the test's output folder. */
export async function screenshot(
  page: IJupyterLabPageFixture,
  testInfo: TestInfo,
  name: string,
  focus?: Locator
): Promise<void> {
  if (focus) {
    // the whole element, down to its last line, in view
    await focus.evaluate(element => element.scrollIntoView({ block: 'end' }));
  }
  const file = testInfo.outputPath(`${name}.png`);
  await page.screenshot({ path: file });
  await testInfo.attach(name, { path: file, contentType: 'image/png' });
}
