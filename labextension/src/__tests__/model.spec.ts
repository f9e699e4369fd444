import { ServerConnection } from '@jupyterlab/services';

import { DeploymentsModel, splitRef } from '../model';
import { requestAPI } from '../request';
import {
  ICall,
  comparison,
  eventStream,
  fakeRequestAPI,
  iris,
  irisDetails,
  measuredComparison,
  Routes,
  server,
  task
} from './fixtures';

jest.mock('../request', () => ({
  ...jest.requireActual('../request'),
  requestAPI: jest.fn()
}));

const mockedRequest = requestAPI as jest.MockedFunction<typeof requestAPI>;
const settings = ServerConnection.makeSettings();

function responseError(
  status: number,
  message: string
): ServerConnection.ResponseError {
  return new ServerConnection.ResponseError(
    new Response('', { status }),
    message
  );
}

describe('DeploymentsModel', () => {
  let calls: ICall[];
  let errors: string[];
  let model: DeploymentsModel;

  function setUp(routes: Routes): DeploymentsModel {
    mockedRequest.mockImplementation(
      fakeRequestAPI(routes, calls) as unknown as typeof requestAPI
    );
    model = new DeploymentsModel({
      serverSettings: settings,
      onError: message => errors.push(message),
      autoRefresh: false,
      taskInterval: 5
    });
    return model;
  }

  const lists: Routes = {
    'GET bundles': { bundles: [iris] },
    'GET servers': { servers: [] },
    'GET tasks': { tasks: [] }
  };

  beforeEach(() => {
    calls = [];
    errors = [];
  });

  afterEach(() => {
    model.dispose();
    mockedRequest.mockReset();
  });

  it('keeps the text made before a generation fails, and reports why', async () => {
    setUp(lists);
    const chunks = [
      'data: {"text": "Once"}\n\n',
      'data: {"detail": "CUDA out of memory"}\n\n'
    ];
    const makeRequest = jest
      .spyOn(ServerConnection, 'makeRequest')
      .mockResolvedValue(eventStream(chunks));
    try {
      expect(await model.generate('4242', 'Tell a story')).toBeUndefined();
    } finally {
      makeRequest.mockRestore();
    }
    expect(model.generation('4242')).toEqual({
      prompt: 'Tell a story',
      text: 'Once',
      finish_reason: null,
      usage: null
    });
    expect(errors).toEqual(['The generation failed: CUDA out of memory']);
    expect(model.isBusy('generate:4242')).toBe(false);
  });

  it('loads bundles, servers and tasks on refresh', async () => {
    setUp({
      ...lists,
      'GET servers': { servers: [server] },
      [`GET bundles/iris/${iris.versions[0].version}`]: irisDetails
    });
    let changes = 0;
    let serverChanges = 0;
    model.changed.connect(() => changes++);
    model.serversChanged.connect(() => serverChanges++);
    expect(model.loaded).toBe(false);
    await model.refresh();
    expect(model.loaded).toBe(true);
    expect(model.bundles.map(b => b.name)).toEqual(['iris']);
    expect(model.servers).toEqual([server]);
    expect(changes).toBeGreaterThan(0);
    expect(serverChanges).toBe(1);
    expect(errors).toEqual([]);
  });

  it('selects a version and loads its details', async () => {
    setUp({ ...lists, 'GET bundles/iris/20261124-0930-ab12cd': irisDetails });
    await model.select('iris:20261124-0930-ab12cd');
    expect(model.selected).toBe('iris:20261124-0930-ab12cd');
    expect(model.selectedDetails?.lock).toEqual([
      'numpy==2.4.6',
      'scikit-learn==1.9.1'
    ]);
  });

  it('polls a push task until it has succeeded', async () => {
    const states = [
      task({
        progress: 0.25,
        layers: [{ digest: 'sha256:aa', done: 1, total: 4 }]
      }),
      task({
        progress: 0.75,
        layers: [{ digest: 'sha256:aa', done: 3, total: 4 }]
      }),
      task({
        state: 'succeeded',
        progress: 1,
        layers: [{ digest: 'sha256:aa', done: 4, total: 4 }],
        result: { image: '127.0.0.1:5000/iris:v1', digest: 'sha256:dd' },
        finished: '2026-11-24T09:32:00Z'
      })
    ];
    const seen: number[] = [];
    setUp({
      'POST tasks': task(),
      'GET tasks/3': () => states.shift()
    });
    model.changed.connect(() => {
      const current = model.tasks.find(t => t.id === '3');
      if (current && seen[seen.length - 1] !== current.progress) {
        seen.push(current.progress);
      }
    });
    const finished = await model.push('iris:20261124-0930-ab12cd', {
      image: '127.0.0.1:5000/iris:v1',
      backend: 'daemonless'
    });
    expect(finished?.state).toBe('succeeded');
    expect(finished?.progress).toBe(1);
    expect(seen).toEqual([0, 0.25, 0.75, 1]);
    expect(model.tasks[0].result?.digest).toBe('sha256:dd');
    const post = calls.find(c => c.method === 'POST')!;
    expect(post.endPoint).toBe('tasks');
    expect(post.body).toEqual({
      kind: 'push',
      ref: 'iris:20261124-0930-ab12cd',
      image: '127.0.0.1:5000/iris:v1',
      backend: 'daemonless'
    });
    expect(calls.filter(c => c.endPoint === 'tasks/3')).toHaveLength(3);
    expect(model.isBusy('push:iris:20261124-0930-ab12cd')).toBe(false);
  });

  it('sends the base image of a push when one is given', async () => {
    setUp({ 'POST tasks': task({ state: 'failed', error: 'no such base' }) });
    const finished = await model.push('iris:v1', {
      image: 'r/iris:v1',
      backend: 'auto',
      base: 'r/base:3.11'
    });
    expect((calls[0].body as { base?: string }).base).toBe('r/base:3.11');
    expect(finished?.state).toBe('failed');
  });

  it('reports a verify result and a cancelled task', async () => {
    setUp({
      'POST tasks': task({ id: '7', kind: 'verify', target: null }),
      'GET tasks/7': task({
        id: '7',
        kind: 'verify',
        state: 'succeeded',
        progress: 1,
        result: { ok: true, summary: 'reproducible: 3 outputs equal' }
      })
    });
    const verified = await model.verify('iris:20261124-0930-ab12cd');
    expect(verified?.result).toEqual({
      ok: true,
      summary: 'reproducible: 3 outputs equal'
    });
    expect(calls[0].body).toEqual({
      kind: 'verify',
      ref: 'iris:20261124-0930-ab12cd'
    });
  });

  it('cancels a task', async () => {
    setUp({
      'DELETE tasks/3': task({
        state: 'cancelled',
        error: 'push of iris was cancelled'
      })
    });
    const cancelled = await model.cancelTask('3');
    expect(cancelled?.state).toBe('cancelled');
    expect(model.tasks[0].state).toBe('cancelled');
  });

  it("gives the server's message to onError when an action fails", async () => {
    setUp({
      'POST servers': responseError(
        404,
        "no bundle 'iris:nope': `notebook-deploy list` shows them"
      )
    });
    const started = await model.serve('iris:nope');
    expect(started).toBeUndefined();
    expect(errors).toEqual([
      "no bundle 'iris:nope': `notebook-deploy list` shows them"
    ]);
    expect(model.isBusy('serve:iris:nope')).toBe(false);
  });

  it('reports a failing refresh once and keeps its message until it works again', async () => {
    const failing = responseError(500, 'the store /x is not readable');
    const routes: Routes = { ...lists, 'GET bundles': failing };
    setUp(routes);
    await model.refresh();
    await model.refresh();
    expect(errors).toEqual(['the store /x is not readable']);
    expect(model.loadError).toBe('the store /x is not readable');
    routes['GET bundles'] = { bundles: [iris] };
    await model.refresh();
    expect(model.loadError).toBeNull();
  });

  it('stops tracking a task that cannot be read any more', async () => {
    setUp({
      'POST tasks': task(),
      'GET tasks/3': responseError(
        404,
        'no task 3: the Jupyter server was restarted'
      )
    });
    const finished = await model.push('iris:v1', {
      image: 'r/iris:v1',
      backend: 'auto'
    });
    expect(calls.filter(c => c.endPoint === 'tasks/3')).toHaveLength(
      DeploymentsModel.TRACK_FAILURES
    );
    expect(errors).toEqual(['no task 3: the Jupyter server was restarted']);
    expect(finished?.state).toBe('running'); // its last known state
  });

  it('follows running tasks found by a refresh', async () => {
    setUp({
      ...lists,
      'GET tasks': { tasks: [task({ id: '9' })] },
      'GET tasks/9': task({ id: '9', state: 'succeeded', progress: 1 })
    });
    await model.refresh();
    await model.track('9');
    expect(model.tasks.find(t => t.id === '9')?.state).toBe('succeeded');
  });

  it('serves, sends a test request and stops', async () => {
    setUp({
      'POST servers': server,
      'POST servers/4242/predict': { status: 200, body: { predictions: [0] } },
      'DELETE servers/4242': { ...server, status: 'stopped' }
    });
    const started = await model.serve(server.ref);
    expect(started?.url).toBe('http://127.0.0.1:40123');
    expect(model.servers).toHaveLength(1);
    await model.predict('4242', [[5.1, 3.5, 1.4, 0.2]]);
    expect(model.answer('4242')).toEqual({
      status: 200,
      body: { predictions: [0] }
    });
    expect(calls[1].body).toEqual({
      method: 'predict',
      instances: [[5.1, 3.5, 1.4, 0.2]]
    });
    await model.stop('4242');
    expect(model.servers[0].status).toBe('stopped');
  });

  it('moves a tag and reloads', async () => {
    setUp({
      ...lists,
      'PUT bundles/iris/tags/prod': { name: 'iris', tag: 'prod', version: 'v2' }
    });
    expect(await model.moveTag('iris', 'prod', 'v2')).toBe(true);
    expect(calls[0]).toEqual({
      method: 'PUT',
      endPoint: 'bundles/iris/tags/prod',
      body: { version: 'v2' }
    });
    expect(calls.map(c => c.endPoint)).toContain('bundles');
  });

  it('compares two versions, then measures them on request', async () => {
    const query =
      'old=iris%3A20261120-0800-ffee00&new=iris%3A20261124-0930-ab12cd';
    setUp({
      [`GET compare?${query}`]: comparison,
      [`GET compare?${query}&measure=1`]: measuredComparison
    });
    const [old, next] = [comparison.old, comparison.new];
    expect(model.comparison(old, next)).toBeUndefined();
    const pending = model.compare(old, next);
    expect(model.isBusy(`compare:${old}>${next}`)).toBe(true);
    expect(await pending).toEqual(comparison);
    expect(model.comparison(old, next)).toEqual(comparison);
    expect(model.comparison(next, old)).toBeUndefined();
    const measuring = model.compare(old, next, true);
    expect(model.isBusy(`measure:${old}>${next}`)).toBe(true);
    await measuring;
    expect(model.comparison(old, next)?.footprints?.new.start_seconds).toBe(
      1.2
    );
    expect(calls.map(c => c.endPoint)).toEqual([
      `compare?${query}`,
      `compare?${query}&measure=1`
    ]);
  });

  it("reports an unknown version's 404 when comparing", async () => {
    setUp({
      'GET compare?old=iris%3Anope&new=iris%3Alatest': responseError(
        404,
        "'iris' has no tag or version 'nope'"
      )
    });
    expect(await model.compare('iris:nope', 'iris:latest')).toBeUndefined();
    expect(errors).toEqual(["'iris' has no tag or version 'nope'"]);
  });

  it('encodes path segments', async () => {
    setUp({ 'GET bundles/my%20model/latest': irisDetails });
    await model.loadDetails('my model');
    expect(calls[0].endPoint).toBe('bundles/my%20model/latest');
  });
});

describe('task order', () => {
  it('lists tasks newest first, by id within the same second', async () => {
    const calls: ICall[] = [];
    mockedRequest.mockImplementation(
      fakeRequestAPI(
        {
          'GET bundles': { bundles: [] },
          'GET servers': { servers: [] },
          'GET tasks': {
            tasks: [
              task({ id: '9', state: 'succeeded' }),
              task({ id: '10', state: 'failed' }),
              task({
                id: '2',
                state: 'succeeded',
                started: '2026-11-24T09:00:00Z'
              })
            ]
          }
        },
        calls
      ) as unknown as typeof requestAPI
    );
    const model = new DeploymentsModel({
      serverSettings: settings,
      onError: () => undefined,
      autoRefresh: false
    });
    await model.refresh();
    expect(model.tasks.map(t => t.id)).toEqual(['10', '9', '2']);
    model.dispose();
  });
});

describe('splitRef', () => {
  it('splits at the last colon; a bare name means latest', () => {
    expect(splitRef('iris:v1')).toEqual(['iris', 'v1']);
    expect(splitRef('iris')).toEqual(['iris', 'latest']);
  });
});
