import { ServerConnection } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { DeploymentsModel } from '../model';
import { requestAPI } from '../request';
import { DeploymentsSidebar, SIDEBAR_ID } from '../sidebar';
import {
  ICall,
  comparison,
  fakeRequestAPI,
  iris,
  irisDetails,
  measuredComparison,
  server,
  task,
  waitFor
} from './fixtures';
import monitorFixture from './monitor-charts.json';

jest.mock('../request', () => ({
  ...jest.requireActual('../request'),
  requestAPI: jest.fn()
}));

const mockedRequest = requestAPI as jest.MockedFunction<typeof requestAPI>;
const COMPARE_QUERY =
  'old=iris%3A20261120-0800-ffee00&new=iris%3A20261124-0930-ab12cd';
const SWAPPED_QUERY =
  'old=iris%3A20261124-0930-ab12cd&new=iris%3A20261120-0800-ffee00';

/** Choose an option of a <select> as a user does (React listens for `change`). */
function choose(select: HTMLSelectElement, value: string): void {
  select.value = value;
  select.dispatchEvent(new Event('change', { bubbles: true }));
}

/** Click a server card's send button and wait for the answer to show. */
async function sendTestRequest(card: Element): Promise<void> {
  (
    card.querySelector(
      '[aria-label^="Send a test request"]'
    ) as HTMLButtonElement
  ).click();
  await waitFor(
    () => card.querySelector('[aria-label="Test answer"]') !== null
  );
}

describe('DeploymentsSidebar', () => {
  let model: DeploymentsModel;
  let sidebar: DeploymentsSidebar;
  let calls: ICall[];
  const opened: string[] = [];

  beforeEach(async () => {
    calls = [];
    mockedRequest.mockImplementation(
      fakeRequestAPI(
        {
          'GET bundles': { bundles: [iris] },
          'GET servers': { servers: [server] },
          'GET tasks': {
            tasks: [
              task({
                state: 'succeeded',
                progress: 1,
                message: 'pushed',
                layers: [
                  { digest: 'sha256:abcdef0123456789', done: 2048, total: 2048 }
                ],
                result: { image: '127.0.0.1:5000/iris:v1', digest: 'sha256:dd' }
              })
            ]
          },
          'GET bundles/iris/20261124-0930-ab12cd': irisDetails,
          'POST servers/4242/predict': {
            status: 200,
            body: { predictions: [0] }
          },
          [`GET compare?${COMPARE_QUERY}`]: comparison,
          [`GET compare?${COMPARE_QUERY}&measure=1`]: measuredComparison,
          [`GET compare?${SWAPPED_QUERY}`]: {
            ...comparison,
            old: comparison.new,
            new: comparison.old,
            breaking: false,
            schema: [],
            sample: { ...comparison.sample, agreement: 1, worst: [] }
          },
          'GET servers/4242/monitor': {
            url: server.url,
            updated: '2026-12-05T23:00:04+00:00',
            points: 6,
            drift: { threshold: 0.2, message: '400 rows in the window' },
            charts: monitorFixture.charts
          },
          'GET servers/4242/logs': {
            logs: 'INFO:     Uvicorn running on http://127.0.0.1:40123'
          }
        },
        calls
      ) as unknown as typeof requestAPI
    );
    model = new DeploymentsModel({
      serverSettings: ServerConnection.makeSettings(),
      onError: () => undefined,
      autoRefresh: false
    });
    sidebar = new DeploymentsSidebar({
      model,
      openUrl: url => opened.push(url)
    });
    Widget.attach(sidebar, document.body);
    await model.refresh();
  });

  afterEach(() => {
    sidebar.dispose();
    model.dispose();
    mockedRequest.mockReset();
  });

  it('has the id, caption and icon of a sidebar tab', () => {
    expect(sidebar.id).toBe(SIDEBAR_ID);
    expect(sidebar.title.caption).toBe('Deployments');
    expect(sidebar.title.icon).toBeTruthy();
  });

  it('lists bundles with their versions, tags and model types', async () => {
    await waitFor(
      () => sidebar.node.querySelectorAll('.nd-Version').length === 2
    );
    const list = sidebar.node.querySelector('[aria-label="Model bundles"]')!;
    expect(list.querySelector('.nd-Bundle-name')!.textContent).toBe('iris');
    const versions = Array.from(
      list.querySelectorAll<HTMLElement>('.nd-Version')
    );
    expect(versions[0].textContent).toContain('20261124-0930-ab12cd');
    expect(versions[0].textContent).toContain('latest');
    expect(versions[0].textContent).toContain('RandomForestClassifier');
    expect(versions[1].textContent).toContain('prod');
    expect(versions.every(v => v.tabIndex === 0)).toBe(true);
  });

  it('shows the details of a version chosen with the keyboard', async () => {
    await waitFor(
      () => sidebar.node.querySelectorAll('.nd-Version').length === 2
    );
    const first = sidebar.node.querySelector<HTMLElement>('.nd-Version')!;
    first.dispatchEvent(
      new KeyboardEvent('keydown', { key: 'Enter', bubbles: true })
    );
    await waitFor(
      () => sidebar.node.querySelector('.nd-Details .nd-Facts') !== null
    );
    const details = sidebar.node.querySelector('.nd-Details')!;
    expect(details.textContent).toContain('numpy==2.4.6');
    expect(details.textContent).toContain('RandomForestClassifier().fit(X, y)');
    expect(
      details.querySelector('[aria-label="Serve iris:20261124-0930-ab12cd"]')
    ).not.toBeNull();
  });

  it('shows a running endpoint and its test answer', async () => {
    await waitFor(() => sidebar.node.querySelector('.nd-Server') !== null);
    const card = sidebar.node.querySelector('.nd-Server')!;
    expect(card.querySelector('.nd-Badge')!.textContent).toBe('running');
    expect(card.querySelector('a')!.getAttribute('href')).toBe(
      'http://127.0.0.1:40123'
    );
    // the request body is prefilled from the bundle's sample once its details are in
    await model.loadDetails(server.ref);
    await waitFor(() =>
      (card.querySelector('textarea') as HTMLTextAreaElement).value.includes(
        '5.1'
      )
    );
    (
      card.querySelector(
        '[aria-label="Open API docs of iris:20261124-0930-ab12cd"]'
      ) as HTMLButtonElement
    ).click();
    expect(opened).toEqual(['http://127.0.0.1:40123/docs']);
    await sendTestRequest(card);
    expect(
      card.querySelector('[aria-label="Test answer"]')!.textContent
    ).toContain('predictions');
    expect(calls.find(c => c.method === 'POST')!.body).toEqual({
      method: 'predict',
      instances: [[5.1, 3.5, 1.4, 0.2]]
    });
  });

  it('sends picked image files as base64 rows', async () => {
    // every byte value, so a wrong encoding (text instead of binary, a kept data: prefix) shows
    const bytes = Uint8Array.from({ length: 256 }, (_, i) => (i * 7) % 256);
    const base64 = (data: Uint8Array) =>
      btoa(String.fromCharCode(...Array.from(data)));
    mockedRequest.mockImplementation(
      fakeRequestAPI(
        {
          'GET bundles/iris/20261124-0930-ab12cd': {
            ...irisDetails,
            manifest: {
              schema: { input: { type: 'tensor', kind: 'image', shape: [] } }
            },
            sample: null
          },
          'POST servers/4242/predict': {
            status: 200,
            body: { predictions: ['cat'] }
          }
        },
        calls
      ) as unknown as typeof requestAPI
    );
    await waitFor(() => sidebar.node.querySelector('.nd-Server') !== null);
    const card = sidebar.node.querySelector('.nd-Server')!;
    expect(card.querySelector('input[type="file"]')).toBeNull();
    await model.loadDetails(server.ref);
    await waitFor(() => card.querySelector('input[type="file"]') !== null);
    const input = card.querySelector<HTMLInputElement>('input[type="file"]')!;
    expect(input.accept).toBe('image/*');
    const files = [
      new File([bytes], 'cat.png', { type: 'image/png' }),
      new File([bytes.subarray(0, 10)], 'dog.png', { type: 'image/png' })
    ];
    Object.defineProperty(input, 'files', { value: files });
    input.dispatchEvent(new Event('change', { bubbles: true }));
    await waitFor(
      () => card.querySelector('[aria-label="Picked files"]') !== null
    );
    expect(card.querySelector('[aria-label="Picked files"]')!.textContent).toBe(
      'cat.png, dog.png'
    );
    await sendTestRequest(card);
    expect(calls.find(c => c.method === 'POST')!.body).toEqual({
      method: 'predict',
      instances: [base64(bytes), base64(bytes.subarray(0, 10))]
    });
  });

  it("shows a text generator's answer piece by piece as it streams", async () => {
    mockedRequest.mockImplementation(
      fakeRequestAPI(
        {
          'GET bundles/iris/20261124-0930-ab12cd': {
            ...irisDetails,
            manifest: { schema: { input: { type: 'tensor', kind: 'str' } } }
          }
        },
        calls
      ) as unknown as typeof requestAPI
    );
    // the server's events, each released when the test says so
    const encoder = new TextEncoder();
    const events = [
      'data: {"text": "Once"}\n\n',
      'data: {"text": " upon"}\n\n',
      'data: {"finish_reason": "length", "usage": {"prompt_tokens": 3, "completion_tokens": 2}}\n\n'
    ];
    const released: (() => void)[] = [];
    let next = 0;
    const read = () =>
      new Promise<{ done: boolean; value?: Uint8Array }>(resolve => {
        if (next === events.length) {
          resolve({ done: true });
          return;
        }
        const event = events[next++];
        released.push(() =>
          resolve({ done: false, value: encoder.encode(event) })
        );
      });
    const makeRequest = jest
      .spyOn(ServerConnection, 'makeRequest')
      .mockResolvedValue({
        ok: true,
        status: 200,
        body: { getReader: () => ({ read }) }
      } as unknown as Response);
    try {
      await waitFor(() => sidebar.node.querySelector('.nd-Server') !== null);
      const card = sidebar.node.querySelector('.nd-Server')!;
      expect(card.querySelector('[aria-label="Prompt"]')).toBeNull();
      await model.loadDetails(server.ref);
      await waitFor(() => card.querySelector('[aria-label="Prompt"]') !== null);
      const prompt = card.querySelector<HTMLTextAreaElement>(
        '[aria-label="Prompt"]'
      )!;
      // React tracks a textarea's value: set it the way the browser does, then tell React
      Object.getOwnPropertyDescriptor(
        HTMLTextAreaElement.prototype,
        'value'
      )!.set!.call(prompt, 'Tell a story');
      prompt.dispatchEvent(new Event('input', { bubbles: true }));
      const generate = () =>
        card.querySelector<HTMLButtonElement>(
          '[aria-label="Generate with iris:20261124-0930-ab12cd"]'
        )!;
      await waitFor(() => !generate().disabled);
      generate().click();
      const text = () =>
        card.querySelector('[aria-label="Generated text"]')?.textContent;
      await waitFor(() => released.length === 1);
      released[0]();
      await waitFor(() => text() === 'Once');
      expect(generate().textContent).toBe('Generating…');
      await waitFor(() => released.length === 2);
      released[1]();
      await waitFor(() => text() === 'Once upon');
      await waitFor(() => released.length === 3);
      released[2]();
      await waitFor(
        () =>
          card.querySelector('[aria-label="Generation end"]')?.textContent ===
          'length, 2 tokens'
      );
      expect(generate().textContent).toBe('Generate');
      expect(makeRequest.mock.calls[0][0]).toContain(
        'notebook-deploy/servers/4242/generate'
      );
      expect(JSON.parse(makeRequest.mock.calls[0][1].body as string)).toEqual({
        prompt: 'Tell a story'
      });
    } finally {
      makeRequest.mockRestore();
    }
  });

  it("shows a server's log when its log view is opened", async () => {
    await waitFor(
      () => sidebar.node.querySelector('.nd-Server details') !== null
    );
    const details =
      sidebar.node.querySelector<HTMLDetailsElement>('.nd-Server details')!;
    details.open = true;
    details.dispatchEvent(new Event('toggle'));
    const log = () =>
      details.querySelector('[aria-label^="Log of"]')!.textContent;
    await waitFor(() => log() !== 'Loading…');
    expect(log()).toContain('Uvicorn running');
    expect(calls.map(c => c.endPoint)).toContain('servers/4242/logs');
  });

  it("draws a server's charts when its monitor view is opened", async () => {
    await waitFor(
      () => sidebar.node.querySelector('.nd-MonitorSection') !== null
    );
    const details =
      sidebar.node.querySelector<HTMLDetailsElement>('.nd-MonitorSection')!;
    expect(calls.map(c => c.endPoint)).not.toContain('servers/4242/monitor');
    details.open = true;
    details.dispatchEvent(new Event('toggle'));
    await waitFor(
      () => details.querySelectorAll('[data-chart] svg').length === 5,
      8000
    );
    expect(calls.map(c => c.endPoint)).toContain('servers/4242/monitor');
    expect(details.textContent).toContain('6 points');
  });

  it('shows a finished push at 100 %', async () => {
    await waitFor(() => sidebar.node.querySelector('.nd-Task') !== null);
    const card = sidebar.node.querySelector('.nd-Task')!;
    expect(card.getAttribute('data-state')).toBe('succeeded');
    const bar = card.querySelector('[role="progressbar"]')!;
    expect(bar.getAttribute('aria-valuenow')).toBe('100');
    expect(card.querySelector('.nd-Progress-text')!.textContent).toBe('100%');
    expect(card.querySelector('.nd-Layer')!.textContent).toContain(
      'abcdef012345'
    );
    expect(
      card.querySelector('[aria-label="Pushed image"]')!.textContent
    ).toContain('127.0.0.1:5000/iris:v1');
    expect(card.querySelector('[aria-label^="Cancel"]')).toBeNull();
  });

  it('compares the shown version with another: breaking changes first, agreement, lock, then measured', async () => {
    await model.select('iris:20261124-0930-ab12cd');
    const select = await (async () => {
      await waitFor(
        () =>
          sidebar.node.querySelector('[aria-label^="Compare iris:"]') !== null
      );
      return sidebar.node.querySelector<HTMLSelectElement>(
        '[aria-label^="Compare iris:"]'
      )!;
    })();
    // the other version of the name, with its tag
    const options = Array.from(select.options).map(o => o.textContent);
    expect(options).toEqual(['Compare with…', '20261120-0800-ffee00 (prod)']);
    choose(select, 'iris:20261120-0800-ffee00');
    await waitFor(() => sidebar.node.querySelector('.nd-Comparison') !== null);
    const view = sidebar.node.querySelector('.nd-Comparison')!;
    expect(view.getAttribute('data-breaking')).toBe('true');
    expect(view.querySelector('.nd-Card-head')!.textContent).toContain(
      'iris:20261120-0800-ffee00 → iris:20261124-0930-ab12cd'
    );
    const changes = Array.from(
      view.querySelectorAll('[aria-label="Schema changes"] li')
    );
    expect(changes[0].className).toBe('nd-mod-breaking');
    expect(changes[0].textContent).toContain('breaks');
    expect(changes[0].textContent).toContain("column 'petal_width' is gone");
    expect(changes[1].className).toBe('');
    const agreement = view.querySelector('[aria-label="Sample agreement"]')!;
    expect(agreement.textContent).toContain('93.3% of 15 rows');
    expect(agreement.textContent).toContain('predict: was 1, now 2');
    const lock = view.querySelector('[aria-label="Lock changes"]')!;
    expect(lock.textContent).toContain('+joblib==1.5.2');
    expect(lock.textContent).toContain('scikit-learn 1.6.1 → 1.7.2');
    expect(view.textContent).toContain('2.0 KB → 120.6 KB (60.28x)');
    expect(view.querySelector('[aria-label="Start"]')).toBeNull();

    // measuring refetches with measure=1 and shows start, latency and memory
    view
      .querySelector<HTMLButtonElement>(
        '[aria-label="Measure start, latency, memory"]'
      )!
      .click();
    await waitFor(
      () => sidebar.node.querySelector('[aria-label="Start"]') !== null
    );
    const measured = sidebar.node.querySelector('.nd-Comparison')!;
    expect(measured.querySelector('[aria-label="Start"]')!.textContent).toBe(
      '0.80 s → 1.20 s (1.50x)'
    );
    expect(
      measured.querySelector('[aria-label="Latency p50"]')!.textContent
    ).toBe('0.30 ms → 0.60 ms (2.00x)');
    expect(
      measured.querySelector('[aria-label="Peak memory"]')!.textContent
    ).toBe('150.0 MB → 180.0 MB (1.20x)');
    expect(
      measured.querySelector('[aria-label="Measure start, latency, memory"]')
    ).toBeNull();

    // swapped: the shown version is the old one
    sidebar.node
      .querySelector<HTMLButtonElement>('[aria-label="Swap old and new"]')!
      .click();
    await waitFor(
      () =>
        sidebar.node
          .querySelector('.nd-Comparison')
          ?.getAttribute('data-breaking') === 'false'
    );
    const swapped = sidebar.node.querySelector('.nd-Comparison')!;
    expect(swapped.textContent).toContain('Schema unchanged.');
    expect(
      swapped.querySelector('[aria-label="Sample agreement"]')!.textContent
    ).toContain('100% of 15 rows');
    expect(
      calls.map(c => c.endPoint).filter(e => e.startsWith('compare'))
    ).toEqual([
      `compare?${COMPARE_QUERY}`,
      `compare?${COMPARE_QUERY}&measure=1`,
      `compare?${SWAPPED_QUERY}`
    ]);
  });
});
