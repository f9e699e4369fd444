import {
  IBundleDetails,
  IBundleSummary,
  IComparison,
  IServer,
  ITask
} from '../types';

export const iris: IBundleSummary = {
  name: 'iris',
  tags: { latest: '20261124-0930-ab12cd', prod: '20261120-0800-ffee00' },
  versions: [
    {
      name: 'iris',
      version: '20261124-0930-ab12cd',
      ref: 'iris:20261124-0930-ab12cd',
      created: '2026-11-24T09:30:00Z',
      tags: ['latest'],
      model_type: 'sklearn.ensemble._forest.RandomForestClassifier',
      methods: ['predict', 'predict_proba'],
      size: 123456
    },
    {
      name: 'iris',
      version: '20261120-0800-ffee00',
      ref: 'iris:20261120-0800-ffee00',
      created: '2026-11-20T08:00:00Z',
      tags: ['prod'],
      model_type: 'sklearn.linear_model._logistic.LogisticRegression',
      methods: ['predict'],
      size: 2048
    }
  ],
  damaged: []
};

export const irisDetails: IBundleDetails = {
  ...iris.versions[0],
  name: 'iris',
  manifest: {},
  recipe: {
    cells: [
      {
        source: 'model = RandomForestClassifier().fit(X, y)',
        execution_count: 3
      }
    ]
  },
  lock: ['numpy==2.4.6', 'scikit-learn==1.9.1'],
  requirements: ['scikit-learn'],
  warnings: [],
  schema: { input: { description: 'rows of 4 numbers' } },
  sample: { instances: [[5.1, 3.5, 1.4, 0.2]] },
  reference: { rows: 150, features: [{ name: '0', kind: 'numeric' }] }
};

/** `GET compare?old=iris:20261120-0800-ffee00&new=iris:20261124-0930-ab12cd`, unmeasured. */
export const comparison: IComparison = {
  old: 'iris:20261120-0800-ffee00',
  new: 'iris:20261124-0930-ab12cd',
  breaking: true,
  schema: [
    {
      what: "column 'petal_width' is gone: rows that send it are refused",
      breaking: true
    },
    { what: 'method predict_proba is new', breaking: false }
  ],
  sample: {
    candidate: 'iris:20261124-0930-ab12cd',
    baseline: 'iris:20261120-0800-ffee00',
    recorded: ['iris:20261120-0800-ffee00'],
    rows: 15,
    agreement: 14 / 15,
    skipped_lines: 0,
    methods: {
      predict: {
        rows: 15,
        agreed: 14,
        refused: 0,
        labels: true,
        confusion: [
          [0, 0, 5],
          [1, 2, 1]
        ],
        candidate_ms: { p50: 0.4, p99: 0.9 },
        baseline_ms: { p50: 0.3, p99: 0.8 }
      }
    },
    worst: [
      {
        line: 7,
        method: 'predict',
        input: [6.3, 2.5, 4.9, 1.5],
        recorded: 1,
        answered: 2,
        distance: null
      }
    ]
  },
  traffic: null,
  lock: {
    added: ['joblib==1.5.2'],
    removed: [],
    changed: [{ name: 'scikit-learn', old: '1.6.1', new: '1.7.2' }]
  },
  sizes: { old: 2048, new: 123456 },
  dependency_layers: null,
  footprints: null,
  ratios: { size: 60.28 },
  notes: [
    'the dependency layers for linux/amd64 are not both in the layer cache'
  ]
};

/** The same comparison, measured (`measure=1`). */
export const measuredComparison: IComparison = {
  ...comparison,
  footprints: {
    old: {
      start_seconds: 0.8,
      latency_ms: { p50: 0.3, p99: 0.8 },
      peak_rss_bytes: 150 * 1024 * 1024
    },
    new: {
      start_seconds: 1.2,
      latency_ms: { p50: 0.6, p99: 1.1 },
      peak_rss_bytes: 180 * 1024 * 1024
    }
  },
  ratios: { size: 60.28, start: 1.5, latency: 2, memory: 1.2 }
};

export const server: IServer = {
  id: '4242',
  ref: 'iris:20261124-0930-ab12cd',
  name: 'iris',
  version: '20261124-0930-ab12cd',
  url: 'http://127.0.0.1:40123',
  docs_url: 'http://127.0.0.1:40123/docs',
  status: 'running',
  pid: 4242,
  methods: ['predict', 'predict_proba']
};

export function task(overrides: Partial<ITask> = {}): ITask {
  return {
    id: '3',
    kind: 'push',
    ref: 'iris:20261124-0930-ab12cd',
    target: '127.0.0.1:5000/iris:v1',
    state: 'running',
    progress: 0,
    message: 'building the image',
    layers: [],
    result: null,
    error: null,
    started: '2026-11-24T09:31:00Z',
    finished: null,
    ...overrides
  };
}

/** A fake server: `routes['GET bundles']` = answer, or a function of the body, or an Error to throw. */
export type Routes = Record<string, unknown>;

export interface ICall {
  method: string;
  endPoint: string;
  body: unknown;
}

export function fakeRequestAPI(routes: Routes, calls: ICall[]) {
  return async (
    endPoint: string,
    _settings: unknown,
    init: RequestInit = {}
  ) => {
    const method = init.method ?? 'GET';
    const body = init.body ? JSON.parse(init.body as string) : undefined;
    calls.push({ method, endPoint, body });
    const key = `${method} ${endPoint}`;
    if (!(key in routes)) {
      throw new Error(`unexpected request ${key}`);
    }
    let answer = routes[key];
    if (typeof answer === 'function') {
      answer = answer(body);
    }
    if (answer instanceof Error) {
      throw answer;
    }
    return answer;
  };
}

/** Wait until `condition()` holds (React renders asynchronously). */
export async function waitFor(
  condition: () => boolean,
  timeout = 3000
): Promise<void> {
  const deadline = Date.now() + timeout;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error('condition not met in time');
    }
    await new Promise(resolve => setTimeout(resolve, 10));
  }
}

/**
 * A 200 answer whose body arrives in these chunks (cut anywhere, as the network does): what
 * `ServerConnection.makeRequest` gives for an event stream. Node's Response here cannot be
 * built over a stream, so it is the part of one that `streamAPI` reads.
 */
export function eventStream(chunks: (string | Uint8Array)[]): Response {
  const encoder = new TextEncoder();
  const bytes = chunks.map(c =>
    typeof c === 'string' ? encoder.encode(c) : c
  );
  let next = 0;
  const reader = {
    read: async () =>
      next < bytes.length
        ? { done: false, value: bytes[next++] }
        : { done: true, value: undefined }
  };
  return {
    ok: true,
    status: 200,
    body: { getReader: () => reader }
  } as unknown as Response;
}
