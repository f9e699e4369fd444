/**
 * Galata (Playwright) configuration: JupyterLab started by the webServer below, on ND_UI_PORT
 * (8888 by default). With PLAYWRIGHT_CHROMIUM_EXECUTABLE (e.g. Debian's /usr/bin/chromium) the
 * system browser is used and nothing is downloaded (no video: it needs Playwright's own ffmpeg).
 */
const baseConfig = require('@jupyterlab/galata/lib/playwright-config');

const port = process.env.ND_UI_PORT || '8888';
const baseURL = `http://127.0.0.1:${port}`;
const executablePath = process.env.PLAYWRIGHT_CHROMIUM_EXECUTABLE;

module.exports = {
  ...baseConfig,
  reporter: [[process.env.CI ? 'line' : 'list'], ['html', { open: 'never' }]],
  timeout: 5 * 60 * 1000,
  retries: 0,
  workers: 1,
  use: {
    ...baseConfig.use,
    baseURL,
    viewport: { width: 1400, height: 900 },
    trace: 'retain-on-failure',
    video: 'off',
    ...(executablePath
      ? {
          launchOptions: {
            executablePath,
            args: [
              '--no-sandbox',
              '--disable-gpu',
              '--disable-dev-shm-usage',
              '--disable-background-networking',
              '--disable-component-update',
              '--disable-sync',
              '--no-first-run'
            ]
          }
        }
      : {})
  },
  webServer: {
    command: 'jlpm start',
    url: `${baseURL}/lab`,
    timeout: 120 * 1000,
    reuseExistingServer: !process.env.CI,
    stdout: 'pipe',
    stderr: 'pipe'
  }
};
