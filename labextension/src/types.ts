/**
 * The resources of the notebook-deploy server extension, as its REST API answers them
 * (docs/jupyter-rest-api.md in the repository).
 */

/** One version of a bundle, as listed. */
export interface IVersionSummary {
  name: string;
  version: string;
  ref: string;
  created: string;
  tags: string[];
  model_type: string;
  methods: string[];
  size: number;
}

/** A version (or `tags.json`) of a name that the store could not read, and why. */
export interface IDamagedVersion {
  name: string;
  version: string;
  path: string;
  reason: string;
}

/** A bundle name with its tags, its versions (newest first) and what of it is damaged. */
export interface IBundleSummary {
  name: string;
  tags: Record<string, string>;
  versions: IVersionSummary[];
  damaged: IDamagedVersion[];
}

/** A recipe cell: the notebook code the model depends on. */
export interface IRecipeCell {
  source: string;
  execution_count?: number | null;
}

/** One version in full: the summary fields plus what the details view shows. */
export interface IBundleDetails extends IVersionSummary {
  name: string;
  manifest: Record<string, unknown>;
  recipe: { cells: IRecipeCell[] } | null;
  lock: string[];
  requirements: string[];
  warnings: string[];
  schema: {
    input?: { description?: string; json_schema?: unknown };
    outputs?: Record<string, unknown>;
  };
  sample: { instances: unknown[]; outputs?: Record<string, unknown> } | null;
  reference: {
    rows: number;
    features: { name: string; kind: string }[];
    predictions?: string | null;
    source?: string;
  } | null;
}

export type ServerStatus = 'running' | 'stopped';

/** A model server started from the sidebar (a child process of the Jupyter server). */
export interface IServer {
  id: string;
  ref: string;
  name: string;
  version: string;
  url: string;
  docs_url: string;
  status: ServerStatus;
  pid: number;
  methods: string[];
}

/** The model server's own answer to a test request. */
export interface IPredictAnswer {
  status: number;
  body: unknown;
}

export type TaskState = 'running' | 'succeeded' | 'failed' | 'cancelled';

export type TaskKind = 'push' | 'verify';

/** A layer of a push in progress: bytes done of its total. */
export interface ITaskLayer {
  digest: string;
  done: number;
  total: number;
}

/** Long work on the server (a push or a verify), polled until it ends. */
export interface ITask {
  id: string;
  kind: TaskKind;
  ref: string;
  target?: string | null;
  state: TaskState;
  progress: number;
  message: string;
  layers?: ITaskLayer[];
  result: Record<string, unknown> | null;
  error: string | null;
  started: string;
  finished: string | null;
}

/** The states after which a task changes no more. */
export const FINISHED_STATES: ReadonlySet<TaskState> = new Set<TaskState>([
  'succeeded',
  'failed',
  'cancelled'
]);

/** `POST tasks` bodies. */
export type TaskRequest =
  | {
      kind: 'push';
      ref: string;
      image: string;
      backend: string;
      base?: string;
    }
  | { kind: 'verify'; ref: string };

/** The 50th and 99th percentiles of a method's latencies, in milliseconds. */
export interface ILatencies {
  p50: number;
  p99: number;
}

/** What the replay of one method's rows found. */
export interface IMethodReplay {
  rows: number;
  agreed: number;
  refused: number;
  /** Every recorded answer is a label (compared exactly), not a score. */
  labels: boolean;
  /** `[recorded, answered, rows]` for each pair of labels. */
  confusion: [unknown, unknown, number][];
  candidate_ms: ILatencies | null;
  baseline_ms: ILatencies | null;
}

/** A row where the new version's answer departs from the recorded one. */
export interface IDisagreement {
  line: number;
  method: string;
  input: unknown;
  recorded: unknown;
  answered: unknown;
  /** The largest absolute difference of the scores; `null` for labels and refusals. */
  distance: number | null;
}

/** A replay of recorded answers against a version (`Replay.to_dict()`). */
export interface IReplay {
  candidate: string;
  baseline: string | null;
  recorded: string[];
  rows: number;
  /** The share of rows answered alike, from 0 to 1. */
  agreement: number;
  skipped_lines: number;
  methods: Record<string, IMethodReplay>;
  worst: IDisagreement[];
}

/** One difference between two versions' schemas. */
export interface ISchemaChange {
  what: string;
  breaking: boolean;
}

/** A version's serving cost, measured in a fresh Python. */
export interface IFootprint {
  start_seconds: number;
  latency_ms: ILatencies;
  peak_rss_bytes: number;
}

/** A locked distribution at another version. */
export interface ILockChange {
  name: string;
  old: string;
  new: string;
}

/** The deployment diff of moving from `old` to `new` (`GET compare`, `Comparison.to_dict()`). */
export interface IComparison {
  old: string;
  new: string;
  /** Whether any schema change breaks callers of today. */
  breaking: boolean;
  /** Breaking changes first. */
  schema: ISchemaChange[];
  /** The new version answering the old one's sample; `null` when it has none of its methods. */
  sample: IReplay | null;
  traffic: IReplay | null;
  lock: { added: string[]; removed: string[]; changed: ILockChange[] };
  sizes: { old: number; new: number };
  dependency_layers: { old: number; new: number } | null;
  /** Only when measured (`measure=1`). */
  footprints: { old: IFootprint; new: IFootprint } | null;
  /** New over old: size, and dependency_layer, latency, start, memory when known. */
  ratios: Record<string, number>;
  notes: string[];
}

/** `GET servers/{id}/monitor`: the monitoring view's Vega-Lite charts, made by the server extension. */
export interface IMonitorAnswer {
  url: string;
  /** When the server's metrics were last read (ISO 8601), null before the first read. */
  updated: string | null;
  /** Points in the series (one per version and read). */
  points: number;
  drift: { threshold: number | null; message: string };
  /** Vega-Lite v5 specs with their data inline, by chart name. */
  charts: Record<string, Record<string, unknown>>;
}
