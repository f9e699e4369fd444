import * as React from 'react';
import embed, { Result, VisualizationSpec } from 'vega-embed';

import { errorMessage } from '../request';
import { IMonitorAnswer, IServer } from '../types';

/** How often an open monitor view asks for fresh charts. */
export const MONITOR_INTERVAL_MS = 2000;

/** The charts in the order shown; the specs themselves come from the server (serving/watch.py). */
export const CHART_ORDER = [
  'requests',
  'latency',
  'errors',
  'batches',
  'drift'
] as const;

export interface IMonitorViewProps {
  server: IServer;
  /** The server's charts now (the `servers/{id}/monitor` route); throws on failure. */
  load: (serverId: string) => Promise<IMonitorAnswer>;
  interval?: number;
}

/**
 * The live monitoring view of a running server: requests/s, latency, error rate, batch sizes
 * per version and drift per feature, polled while the view is shown and no longer once it is
 * closed (unmounted).
 */
export function MonitorView(props: IMonitorViewProps): JSX.Element {
  const { server, load } = props;
  const interval = props.interval ?? MONITOR_INTERVAL_MS;
  const [answer, setAnswer] = React.useState<IMonitorAnswer | null>(null);
  const [problem, setProblem] = React.useState<string | null>(null);
  // the latest `load`, so that a parent's re-render (a new arrow) does not restart the polling
  const loader = React.useRef(load);
  loader.current = load;
  React.useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const poll = async () => {
      try {
        const next = await loader.current(server.id);
        if (!stopped) {
          setAnswer(next);
          setProblem(null);
        }
      } catch (error) {
        if (!stopped) {
          setProblem(errorMessage(error));
        }
      }
      if (!stopped) {
        timer = setTimeout(() => void poll(), interval);
      }
    };
    void poll();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [server.id, interval]);
  return (
    <div className="nd-Monitor" aria-label={`Monitor of ${server.ref}`}>
      {problem ? (
        <p className="nd-Problem" role="alert">
          {problem}
        </p>
      ) : null}
      {answer === null ? (
        problem ? null : (
          <p className="nd-Empty">Reading the server’s metrics…</p>
        )
      ) : (
        <>
          <p className="nd-Monitor-status" aria-label="Monitor status">
            {answer.points === 0
              ? 'The first points come with the next read.'
              : `${answer.points} points, updated ${formatTime(answer.updated)}`}
          </p>
          {CHART_ORDER.map(name =>
            answer.charts[name] ? (
              <Chart key={name} name={name} spec={answer.charts[name]} />
            ) : null
          )}
          <p className="nd-Monitor-drift" aria-label="Drift status">
            {answer.drift.message}
          </p>
        </>
      )}
    </div>
  );
}

/** One Vega-Lite chart, drawn as SVG by vega-embed, redrawn when its spec changes. */
function Chart(props: {
  name: string;
  spec: Record<string, unknown>;
}): JSX.Element {
  const node = React.useRef<HTMLDivElement>(null);
  const [problem, setProblem] = React.useState<string | null>(null);
  React.useEffect(() => {
    let view: Result | undefined;
    let gone = false;
    embed(node.current!, props.spec as VisualizationSpec, {
      actions: false,
      renderer: 'svg'
    }).then(
      result => {
        if (gone) {
          result.finalize();
        } else {
          view = result;
          setProblem(null);
        }
      },
      error => setProblem(errorMessage(error))
    );
    return () => {
      gone = true;
      view?.finalize();
    };
  }, [props.spec]);
  return (
    <figure className="nd-Chart" data-chart={props.name}>
      <div ref={node} aria-label={`Chart ${props.name}`} />
      {problem ? (
        <figcaption className="nd-Problem">{problem}</figcaption>
      ) : null}
    </figure>
  );
}

function formatTime(iso: string | null): string {
  return iso ? new Date(iso).toLocaleTimeString() : 'never';
}
