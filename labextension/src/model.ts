import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import {
  errorMessage,
  jsonRequest,
  requestAPI,
  segment,
  streamAPI
} from './request';
import {
  FINISHED_STATES,
  IBundleDetails,
  IBundleSummary,
  IComparison,
  IMonitorAnswer,
  IPredictAnswer,
  IServer,
  ITask,
  TaskRequest
} from './types';

/** A text generator's answer to a prompt, as it streams in (`POST servers/{id}/generate`),
 * gathered from its events. */
export interface IGeneration {
  prompt: string;
  /** The text so far. */
  text: string;
  /** `stop` or `length` once it has ended; null while it is being made. */
  finish_reason: string | null;
  usage: { prompt_tokens: number; completion_tokens: number } | null;
}

/** What a push needs beside the bundle. */
export interface IPushOptions {
  image: string;
  backend: string;
  /** The base image; the server's default (`python:3.X-slim`) when empty. */
  base?: string;
}

/**
 * The state the Deployments sidebar shows: bundles, model servers and tasks of the server
 * extension, refreshed by a `Poll` that stands by while the sidebar (or the page) is hidden,
 * and the actions on them. Every failure goes to `onError` with the server's message.
 */
export class DeploymentsModel implements IDisposable {
  constructor(options: DeploymentsModel.IOptions) {
    this._serverSettings = options.serverSettings;
    this._onError = options.onError;
    this._taskInterval = options.taskInterval ?? 500;
    this._poll = new Poll({
      auto: options.autoRefresh ?? true,
      factory: () => this._load(),
      frequency: {
        interval: options.refreshInterval ?? 5000,
        backoff: true,
        max: 60 * 1000
      },
      name: 'notebook-deploy:refresh',
      standby: options.standby ?? 'when-hidden'
    });
  }

  /** Emitted whenever anything shown changes. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Emitted when the list of model servers changes (for the Running sidebar). */
  get serversChanged(): ISignal<this, void> {
    return this._serversChanged;
  }

  get bundles(): readonly IBundleSummary[] {
    return this._bundles;
  }

  get servers(): readonly IServer[] {
    return this._servers;
  }

  /** Tasks, newest first. */
  get tasks(): readonly ITask[] {
    return this._tasks;
  }

  /** Whether the first load has finished (successfully or not). */
  get loaded(): boolean {
    return this._loaded;
  }

  /** The message of the last failed refresh, `null` once a refresh works again. */
  get loadError(): string | null {
    return this._loadError;
  }

  /** The selected version's reference (`name:version`), if any. */
  get selected(): string | null {
    return this._selected;
  }

  /** The details of the selected version, once loaded. */
  get selectedDetails(): IBundleDetails | null {
    return this._selected ? (this._details.get(this._selected) ?? null) : null;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** The details of a version, if loaded. */
  details(ref: string): IBundleDetails | undefined {
    return this._details.get(ref);
  }

  /** The last answer to a test request sent to a server. */
  answer(serverId: string): IPredictAnswer | undefined {
    return this._answers.get(serverId);
  }

  /** The text a server generated for its last prompt, so far. */
  generation(serverId: string): IGeneration | undefined {
    return this._generations.get(serverId);
  }

  /** The last comparison of moving from `old` to `next` (references as given to `compare`). */
  comparison(old: string, next: string): IComparison | undefined {
    return this._comparisons.get(comparisonKey(old, next));
  }

  /**
   * Compare two versions (`GET compare`): schema changes, sample agreement, lock and sizes; with
   * `measure`, also each version's start, latency and peak memory (seconds: two fresh Pythons).
   * Busy as `compare:OLD>NEW` or `measure:OLD>NEW`.
   */
  async compare(
    old: string,
    next: string,
    measure = false
  ): Promise<IComparison | undefined> {
    const key = comparisonKey(old, next);
    const query: Record<string, string> = { old, new: next };
    if (measure) {
      query.measure = '1';
    }
    return this._action(
      `${measure ? 'measure' : 'compare'}:${key}`,
      async () => {
        const comparison = await this._request<IComparison>(
          `compare${URLExt.objectToQueryString(query)}`
        );
        this._comparisons.set(key, comparison);
        return comparison;
      }
    );
  }

  /** Whether an action with this key (e.g. `serve:iris:v1`) is in flight. */
  isBusy(key: string): boolean {
    return this._busy.has(key);
  }

  /** Refresh now, and wait until the new state is in. */
  async refresh(): Promise<void> {
    try {
      await this._load();
    } catch {
      // reported, and kept in loadError
    }
  }

  /** Select a version and load its details. */
  async select(ref: string | null): Promise<void> {
    this._selected = ref;
    this._changed.emit();
    if (ref) {
      await this.loadDetails(ref);
    }
  }

  /** Load (or reload) the details of a version (`name:version` or `name:tag`). */
  async loadDetails(ref: string): Promise<IBundleDetails | undefined> {
    const [name, version] = splitRef(ref);
    return this._action(`details:${ref}`, async () => {
      const details = await this._request<IBundleDetails>(
        `bundles/${segment(name)}/${segment(version)}`
      );
      this._details.set(ref, details);
      return details;
    });
  }

  /** Start a model server for a version; resolves once it answers. */
  async serve(ref: string, port?: number): Promise<IServer | undefined> {
    return this._action(`serve:${ref}`, async () => {
      const body: { ref: string; port?: number } = { ref };
      if (port !== undefined) {
        body.port = port;
      }
      const server = await this._request<IServer>(
        'servers',
        jsonRequest('POST', body)
      );
      this._upsertServer(server);
      return server;
    });
  }

  /** Stop a model server. */
  async stop(serverId: string): Promise<IServer | undefined> {
    return this._action(`stop:${serverId}`, async () => {
      const server = await this._request<IServer>(
        `servers/${segment(serverId)}`,
        jsonRequest('DELETE')
      );
      this._upsertServer(server);
      return server;
    });
  }

  /** A server's log. */
  async logs(serverId: string): Promise<string | undefined> {
    return this._action(`logs:${serverId}`, async () => {
      const answer = await this._request<{ logs: string }>(
        `servers/${segment(serverId)}/logs`
      );
      return answer.logs;
    });
  }

  /**
   * A server's monitoring charts, sampled from its metrics now. Errors are thrown, not reported:
   * the monitor view polls and shows them in place.
   */
  monitor(serverId: string): Promise<IMonitorAnswer> {
    return this._request<IMonitorAnswer>(
      `servers/${segment(serverId)}/monitor`
    );
  }

  /** Send rows to a model server; keeps its answer (errors of the model server included). */
  async predict(
    serverId: string,
    instances: unknown[],
    method = 'predict'
  ): Promise<IPredictAnswer | undefined> {
    return this._action(`predict:${serverId}`, async () => {
      const answer = await this._request<IPredictAnswer>(
        `servers/${segment(serverId)}/predict`,
        jsonRequest('POST', { method, instances })
      );
      this._answers.set(serverId, answer);
      return answer;
    });
  }

  /**
   * Send a prompt to a text generator; its text grows in `generation(serverId)` piece by piece
   * as the server streams it (each piece a `changed` signal). An error after the start keeps
   * the text made so far.
   */
  async generate(
    serverId: string,
    prompt: string
  ): Promise<IGeneration | undefined> {
    return this._action(`generate:${serverId}`, async () => {
      let generation: IGeneration = {
        prompt,
        text: '',
        finish_reason: null,
        usage: null
      };
      const show = (next: IGeneration) => {
        generation = next;
        this._generations.set(serverId, generation);
        this._changed.emit();
      };
      show(generation);
      await streamAPI(
        `servers/${segment(serverId)}/generate`,
        this._serverSettings,
        jsonRequest('POST', { prompt }),
        data => {
          const event = data as Partial<IGeneration> & {
            detail?: unknown;
          };
          if (event.detail !== undefined) {
            throw new Error(`The generation failed: ${String(event.detail)}`);
          }
          show(
            event.finish_reason
              ? {
                  ...generation,
                  finish_reason: event.finish_reason,
                  usage: event.usage ?? null
                }
              : { ...generation, text: generation.text + (event.text ?? '') }
          );
        }
      );
      return generation;
    });
  }

  /** Start pushing a version's image; resolves with the task once it has ended. */
  async push(ref: string, options: IPushOptions): Promise<ITask | undefined> {
    const body: TaskRequest = {
      kind: 'push',
      ref,
      image: options.image,
      backend: options.backend
    };
    if (options.base) {
      body.base = options.base;
    }
    return this._startTask(`push:${ref}`, body);
  }

  /** Start verifying a version (replaying its recipe); resolves with the task once it has ended. */
  async verify(ref: string): Promise<ITask | undefined> {
    return this._startTask(`verify:${ref}`, { kind: 'verify', ref });
  }

  /** Cancel a running task. */
  async cancelTask(taskId: string): Promise<ITask | undefined> {
    return this._action(`cancel:${taskId}`, async () => {
      const task = await this._request<ITask>(
        `tasks/${segment(taskId)}`,
        jsonRequest('DELETE')
      );
      this._upsertTask(task);
      return task;
    });
  }

  /** Point a tag at a version (a rollback when it is an older one). */
  async moveTag(name: string, tag: string, version: string): Promise<boolean> {
    const moved = await this._action(`tag:${name}`, async () => {
      await this._request(
        `bundles/${segment(name)}/tags/${segment(tag)}`,
        jsonRequest('PUT', { version })
      );
      return true;
    });
    if (moved) {
      await this.refresh();
    }
    return moved ?? false;
  }

  /**
   * Poll a task until it has ended, keeping `tasks` up to date; resolves with its last state.
   * Several calls for one task share one poll.
   */
  track(taskId: string): Promise<ITask> {
    const existing = this._tracking.get(taskId);
    if (existing) {
      return existing;
    }
    let failures = 0;
    const tracking = new Promise<ITask>(resolve => {
      const poll = new Poll<ITask | null>({
        factory: async () => {
          let task: ITask;
          try {
            task = await this._request<ITask>(`tasks/${segment(taskId)}`);
            failures = 0;
          } catch (error) {
            if (++failures >= DeploymentsModel.TRACK_FAILURES) {
              this._report(error);
              poll.dispose();
              resolve(
                this._tasks.find(t => t.id === taskId) ??
                  lostTask(taskId, error)
              );
            }
            return null;
          }
          this._upsertTask(task);
          if (FINISHED_STATES.has(task.state)) {
            poll.dispose();
            resolve(task);
          }
          return task;
        },
        frequency: { interval: this._taskInterval, backoff: false },
        name: `notebook-deploy:task-${taskId}`,
        standby: 'never'
      });
      this._polls.add(poll);
      poll.disposed.connect(() => this._polls.delete(poll));
    });
    this._tracking.set(taskId, tracking);
    void tracking.then(() => this._tracking.delete(taskId));
    return tracking;
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._poll.dispose();
    for (const poll of Array.from(this._polls)) {
      poll.dispose();
    }
    Signal.clearData(this);
  }

  private async _startTask(
    key: string,
    body: TaskRequest
  ): Promise<ITask | undefined> {
    const task = await this._action(key, async () => {
      const started = await this._request<ITask>(
        'tasks',
        jsonRequest('POST', body)
      );
      this._upsertTask(started);
      return started;
    });
    if (!task) {
      return undefined;
    }
    if (FINISHED_STATES.has(task.state)) {
      return task;
    }
    return this.track(task.id);
  }

  /** Load bundles, servers and tasks; the poll's factory. */
  private async _load(): Promise<void> {
    try {
      const [bundles, servers, tasks] = await Promise.all([
        this._request<{ bundles: IBundleSummary[] }>('bundles'),
        this._request<{ servers: IServer[] }>('servers'),
        this._request<{ tasks: ITask[] }>('tasks')
      ]);
      this._bundles = bundles.bundles;
      const serversChanged = !sameServers(this._servers, servers.servers);
      this._servers = servers.servers;
      this._tasks = sortTasks(tasks.tasks);
      this._loadError = null;
      this._loaded = true;
      if (serversChanged) {
        this._serversChanged.emit();
      }
      this._changed.emit();
    } catch (error) {
      const message = errorMessage(error);
      if (message !== this._loadError) {
        this._report(error);
      }
      this._loadError = message;
      this._loaded = true;
      this._changed.emit();
      throw error; // the poll backs off
    }
    // follow tasks started elsewhere (another tab, before a reload)
    for (const task of this._tasks) {
      if (!FINISHED_STATES.has(task.state)) {
        void this.track(task.id);
      }
    }
    // the test request form of a running server is prefilled from its bundle's sample
    for (const server of this._servers) {
      if (server.status === 'running' && !this._details.has(server.ref)) {
        void this.loadDetails(server.ref);
      }
    }
  }

  /** Run an action: mark it busy, report its failure (and resolve `undefined`). */
  private async _action<T>(
    key: string,
    work: () => Promise<T>
  ): Promise<T | undefined> {
    this._busy.add(key);
    this._changed.emit();
    try {
      return await work();
    } catch (error) {
      this._report(error);
      return undefined;
    } finally {
      this._busy.delete(key);
      this._changed.emit();
    }
  }

  private _request<T>(endPoint: string, init: RequestInit = {}): Promise<T> {
    return requestAPI<T>(endPoint, this._serverSettings, init);
  }

  private _report(error: unknown): void {
    this._onError(errorMessage(error), error);
  }

  private _upsertServer(server: IServer): void {
    const index = this._servers.findIndex(s => s.id === server.id);
    this._servers =
      index === -1
        ? [...this._servers, server]
        : this._servers.map((s, i) => (i === index ? server : s));
    this._serversChanged.emit();
    this._changed.emit();
  }

  private _upsertTask(task: ITask): void {
    const others = this._tasks.filter(t => t.id !== task.id);
    this._tasks = sortTasks([task, ...others]);
    this._changed.emit();
  }

  private _serverSettings: ServerConnection.ISettings;
  private _onError: (message: string, error: unknown) => void;
  private _taskInterval: number;
  private _poll: Poll;
  private _polls = new Set<Poll<ITask | null>>();
  private _tracking = new Map<string, Promise<ITask>>();
  private _bundles: IBundleSummary[] = [];
  private _servers: IServer[] = [];
  private _tasks: ITask[] = [];
  private _details = new Map<string, IBundleDetails>();
  private _answers = new Map<string, IPredictAnswer>();
  private _generations = new Map<string, IGeneration>();
  private _comparisons = new Map<string, IComparison>();
  private _busy = new Set<string>();
  private _selected: string | null = null;
  private _loaded = false;
  private _loadError: string | null = null;
  private _isDisposed = false;
  private _changed = new Signal<this, void>(this);
  private _serversChanged = new Signal<this, void>(this);
}

export namespace DeploymentsModel {
  export interface IOptions {
    serverSettings: ServerConnection.ISettings;
    /** Told every failure, with the message to show. */
    onError: (message: string, error: unknown) => void;
    /** Milliseconds between refreshes of the lists (default 5000). */
    refreshInterval?: number;
    /** Milliseconds between polls of a running task (default 500). */
    taskInterval?: number;
    /** When the list refresh stands by (default: while the page is hidden). */
    standby?: Poll.Standby | (() => boolean | Poll.Standby);
    /** Start refreshing at once (default true). */
    autoRefresh?: boolean;
  }

  /** Consecutive failed polls of a task after which tracking it stops. */
  export const TRACK_FAILURES = 5;
}

/** `name:version` → `[name, version]`; a bare name means its `latest` tag. */
export function splitRef(ref: string): [string, string] {
  const colon = ref.lastIndexOf(':');
  return colon === -1
    ? [ref, 'latest']
    : [ref.slice(0, colon), ref.slice(colon + 1)];
}

/** The key of a comparison of two references, as in the busy keys `compare:OLD>NEW`. */
export function comparisonKey(old: string, next: string): string {
  return `${old}>${next}`;
}

/** Newest first: by start time, then by id (ids count up; times are to the second). */
function sortTasks(tasks: ITask[]): ITask[] {
  const byId = (a: ITask, b: ITask) =>
    Number(b.id) - Number(a.id) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
  return [...tasks].sort((a, b) =>
    a.started < b.started ? 1 : a.started > b.started ? -1 : byId(a, b)
  );
}

function sameServers(a: readonly IServer[], b: readonly IServer[]): boolean {
  return (
    a.length === b.length &&
    a.every(
      (s, i) =>
        s.id === b[i].id && s.status === b[i].status && s.url === b[i].url
    )
  );
}

function lostTask(taskId: string, error: unknown): ITask {
  return {
    id: taskId,
    kind: 'push',
    ref: '',
    state: 'failed',
    progress: 0,
    message: '',
    result: null,
    error: errorMessage(error),
    started: '',
    finished: null
  };
}
