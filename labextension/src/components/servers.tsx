import * as React from 'react';

import { compactJson } from '../format';
import { FILE_KINDS, PROMPT_KINDS, inputKind, readBase64 } from '../inputs';
import { IGeneration } from '../model';
import {
  IBundleDetails,
  IMonitorAnswer,
  IPredictAnswer,
  IServer
} from '../types';
import { MonitorView } from './monitor';

export interface IServerListProps {
  servers: readonly IServer[];
  details: (ref: string) => IBundleDetails | undefined;
  answer: (serverId: string) => IPredictAnswer | undefined;
  isBusy: (key: string) => boolean;
  onStop: (server: IServer) => void;
  onOpenDocs: (server: IServer) => void;
  onPredict: (server: IServer, method: string, instances: unknown[]) => void;
  /** The server's log (its output), for the log view. */
  onLogs: (server: IServer) => Promise<string | undefined>;
  /** The text generated for a server's last prompt, so far. */
  generation: (serverId: string) => IGeneration | undefined;
  onGenerate: (server: IServer, prompt: string) => void;
  /** A running server's monitoring charts now, for the monitor view (throws on failure). */
  monitor: (serverId: string) => Promise<IMonitorAnswer>;
}

/** The model servers started from the sidebar: status, URL, and a test request form. */
export function ServerList(props: IServerListProps): JSX.Element {
  return (
    <ul className="nd-ServerList" aria-label="Model servers">
      {props.servers.map(server => (
        <ServerCard key={server.id} server={server} {...props} />
      ))}
    </ul>
  );
}

function ServerCard(
  props: IServerListProps & { server: IServer }
): JSX.Element {
  const { server } = props;
  const running = server.status === 'running';
  const kind = inputKind(props.details(server.ref));
  return (
    <li
      className="nd-Card nd-Server"
      data-server={server.id}
      aria-label={`Server ${server.ref}`}
    >
      <div className="nd-Card-head">
        <span className="nd-Card-title">{server.ref}</span>
        <span
          className={`nd-Badge nd-mod-${server.status}`}
          aria-label="Server status"
        >
          {server.status}
        </span>
      </div>
      <a
        className="nd-Url"
        href={server.url}
        target="_blank"
        rel="noopener noreferrer"
      >
        {server.url}
      </a>
      <div className="nd-Actions">
        {running ? (
          <button
            className="jp-Button jp-mod-styled jp-mod-warn"
            aria-label={`Stop ${server.ref}`}
            disabled={props.isBusy(`stop:${server.id}`)}
            onClick={() => props.onStop(server)}
          >
            Stop
          </button>
        ) : null}
        <button
          className="jp-Button jp-mod-styled"
          aria-label={`Open API docs of ${server.ref}`}
          disabled={!running}
          onClick={() => props.onOpenDocs(server)}
        >
          Open API docs
        </button>
      </div>
      <ServerLog server={server} onLogs={props.onLogs} />
      {running ? <ServerMonitor server={server} load={props.monitor} /> : null}
      {running ? (
        <TestRequest
          server={server}
          sample={props.details(server.ref)?.sample?.instances ?? null}
          kind={kind}
          answer={props.answer(server.id)}
          sending={props.isBusy(`predict:${server.id}`)}
          onSend={(method, instances) =>
            props.onPredict(server, method, instances)
          }
        />
      ) : null}
      {running && kind !== null && PROMPT_KINDS.has(kind) ? (
        <Prompt
          server={server}
          generation={props.generation(server.id)}
          generating={props.isBusy(`generate:${server.id}`)}
          onGenerate={prompt => props.onGenerate(server, prompt)}
        />
      ) : null}
    </li>
  );
}

/** The "Monitor" section: its live charts exist (and poll) only while it is open. */
function ServerMonitor(props: {
  server: IServer;
  load: (serverId: string) => Promise<IMonitorAnswer>;
}): JSX.Element {
  const [open, setOpen] = React.useState(false);
  return (
    <details
      className="nd-Section nd-MonitorSection"
      onToggle={event =>
        setOpen((event.currentTarget as HTMLDetailsElement).open)
      }
    >
      <summary aria-label={`Monitor ${props.server.ref}`}>Monitor</summary>
      {open ? <MonitorView server={props.server} load={props.load} /> : null}
    </details>
  );
}

function ServerLog(props: {
  server: IServer;
  onLogs: (server: IServer) => Promise<string | undefined>;
}): JSX.Element {
  const [log, setLog] = React.useState<string | null>(null);
  const load = async () => {
    const text = await props.onLogs(props.server);
    setLog(text ?? '');
  };
  return (
    <details
      className="nd-Section"
      onToggle={event => {
        if ((event.currentTarget as HTMLDetailsElement).open) {
          void load();
        }
      }}
    >
      <summary>Log</summary>
      <button
        className="jp-Button jp-mod-styled nd-mod-small"
        aria-label={`Reload the log of ${props.server.ref}`}
        onClick={() => void load()}
      >
        Reload
      </button>
      <pre className="nd-Code" aria-label={`Log of ${props.server.ref}`}>
        {log === null ? 'Loading…' : log || '(empty)'}
      </pre>
    </details>
  );
}

function TestRequest(props: {
  server: IServer;
  sample: unknown[] | null;
  /** The input schema's kind: `image` and `bytes` rows are picked as files. */
  kind: string | null;
  answer: IPredictAnswer | undefined;
  sending: boolean;
  onSend: (method: string, instances: unknown[]) => void;
}): JSX.Element {
  const methods = props.server.methods.length
    ? props.server.methods
    : ['predict'];
  const [method, setMethod] = React.useState(methods[0]);
  const [text, setText] = React.useState<string | null>(null);
  const [problem, setProblem] = React.useState<string | null>(null);
  // rows read from picked files (base64), sent instead of the text body while there are any
  const [files, setFiles] = React.useState<{ names: string[]; rows: string[] }>(
    { names: [], rows: [] }
  );
  const takesFiles = props.kind !== null && FILE_KINDS.has(props.kind);
  // prefilled from the bundle's sample once its details are in, until the user types
  const shown =
    text ?? (props.sample ? compactJson({ instances: props.sample }) : '');

  const pick = async (picked: FileList | null) => {
    const chosen = Array.from(picked ?? []);
    try {
      const rows = await Promise.all(chosen.map(readBase64));
      setFiles({ names: chosen.map(file => file.name), rows });
      setProblem(null);
    } catch (error) {
      setProblem(`Cannot read the file: ${(error as Error).message}`);
    }
  };

  const send = () => {
    if (files.rows.length) {
      setProblem(null);
      props.onSend(method, files.rows);
      return;
    }
    let instances: unknown;
    try {
      const parsed = JSON.parse(shown);
      instances = Array.isArray(parsed) ? parsed : parsed?.instances;
    } catch (error) {
      setProblem(`Not JSON: ${(error as Error).message}`);
      return;
    }
    if (!Array.isArray(instances)) {
      setProblem('Write {"instances": [...]} or a JSON list of rows.');
      return;
    }
    setProblem(null);
    props.onSend(method, instances);
  };

  return (
    <div className="nd-TestRequest">
      <div className="nd-Actions">
        <select
          className="jp-mod-styled"
          aria-label="Method"
          value={method}
          onChange={event => setMethod(event.target.value)}
        >
          {methods.map(m => (
            <option key={m} value={m}>
              {m}
            </option>
          ))}
        </select>
        <button
          className="jp-Button jp-mod-styled jp-mod-accept"
          aria-label={`Send a test request to ${props.server.ref}`}
          disabled={props.sending || !(shown || files.rows.length)}
          onClick={send}
        >
          {props.sending ? 'Sending…' : 'Send test request'}
        </button>
      </div>
      {takesFiles ? (
        <label className="nd-TestRequest-files">
          {props.kind === 'image' ? 'Images' : 'Files'}, one row each:{' '}
          <input
            type="file"
            multiple
            accept={props.kind === 'image' ? 'image/*' : undefined}
            aria-label={`${props.kind} files to send`}
            onChange={event => void pick(event.target.files)}
          />
          {files.names.length ? (
            <span aria-label="Picked files">{files.names.join(', ')}</span>
          ) : null}
        </label>
      ) : null}
      <textarea
        className="nd-Code nd-TestRequest-body"
        aria-label="Test request body"
        rows={5}
        spellCheck={false}
        hidden={files.rows.length > 0}
        value={shown}
        onChange={event => setText(event.target.value)}
      />
      {problem ? (
        <p className="nd-Problem" role="alert">
          {problem}
        </p>
      ) : null}
      {props.answer ? (
        <div className="nd-Answer">
          <span
            className={`nd-Badge ${props.answer.status < 400 ? 'nd-mod-succeeded' : 'nd-mod-failed'}`}
          >
            HTTP {props.answer.status}
          </span>
          <pre className="nd-Code" aria-label="Test answer">
            {typeof props.answer.body === 'string'
              ? props.answer.body
              : compactJson(props.answer.body)}
          </pre>
        </div>
      ) : null}
    </div>
  );
}

/** A prompt for a text generator, its answer growing as the server streams it. */
function Prompt(props: {
  server: IServer;
  generation: IGeneration | undefined;
  generating: boolean;
  onGenerate: (prompt: string) => void;
}): JSX.Element {
  const [prompt, setPrompt] = React.useState('');
  const { generation } = props;
  return (
    <details className="nd-Section nd-Prompt">
      <summary>Generate text (streamed)</summary>
      <textarea
        className="nd-Code nd-TestRequest-body"
        aria-label="Prompt"
        rows={3}
        value={prompt}
        onChange={event => setPrompt(event.target.value)}
      />
      <button
        className="jp-Button jp-mod-styled jp-mod-accept"
        aria-label={`Generate with ${props.server.ref}`}
        disabled={props.generating || !prompt}
        onClick={() => props.onGenerate(prompt)}
      >
        {props.generating ? 'Generating…' : 'Generate'}
      </button>
      {generation ? (
        <div className="nd-Answer">
          <pre className="nd-Code" aria-label="Generated text">
            {generation.text}
          </pre>
          {generation.finish_reason ? (
            <span className="nd-Badge" aria-label="Generation end">
              {generation.finish_reason}
              {generation.usage
                ? `, ${generation.usage.completion_tokens} tokens`
                : ''}
            </span>
          ) : null}
        </div>
      ) : null}
    </details>
  );
}
