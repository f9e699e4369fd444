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
