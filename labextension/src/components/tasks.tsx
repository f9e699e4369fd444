import * as React from 'react';

import { formatBytes, percent, shortDigest } from '../format';
import { FINISHED_STATES, ITask, ITaskLayer } from '../types';

export interface ITaskListProps {
  tasks: readonly ITask[];
  isBusy: (key: string) => boolean;
  onCancel: (task: ITask) => void;
}

/** Pushes and verifications: state, overall and per-layer progress, result, cancel. */
export function TaskList(props: ITaskListProps): JSX.Element {
  return (
    <ul className="nd-TaskList" aria-label="Tasks">
      {props.tasks.map(task => (
        <TaskCard
          key={task.id}
          task={task}
          cancelling={props.isBusy(`cancel:${task.id}`)}
          onCancel={() => props.onCancel(task)}
        />
      ))}
    </ul>
  );
}

function TaskCard(props: {
  task: ITask;
  cancelling: boolean;
  onCancel: () => void;
}): JSX.Element {
  const { task } = props;
  const running = !FINISHED_STATES.has(task.state);
  const title =
    task.kind === 'push'
      ? `Push ${task.ref} → ${task.target ?? ''}`
      : `Verify ${task.ref}`;
  return (
    <li
      className="nd-Card nd-Task"
      data-task={task.id}
      data-state={task.state}
      aria-label={title}
    >
      <div className="nd-Card-head">
        <span className="nd-Card-title">{title}</span>
        <span
          className={`nd-Badge nd-mod-${task.state}`}
          aria-label="Task state"
        >
          {task.state}
        </span>
      </div>
      <ProgressBar
        label={`Progress of ${task.kind} ${task.ref}`}
        fraction={task.progress}
      />
      {task.message ? (
        <div className="nd-Task-message">{task.message}</div>
      ) : null}
      {task.layers && task.layers.length > 0 ? (
        <ul className="nd-Layers" aria-label="Layers">
          {task.layers.map(layer => (
            <LayerRow key={layer.digest} layer={layer} />
          ))}
        </ul>
      ) : null}
      {running ? (
        <div className="nd-Actions">
          <button
            className="jp-Button jp-mod-styled jp-mod-warn"
            aria-label={`Cancel ${task.kind} of ${task.ref}`}
            disabled={props.cancelling}
            onClick={props.onCancel}
          >
            Cancel
          </button>
        </div>
      ) : null}
      <TaskOutcome task={task} />
    </li>
  );
}

function LayerRow({ layer }: { layer: ITaskLayer }): JSX.Element {
  const fraction =
    layer.total > 0 ? layer.done / layer.total : layer.done > 0 ? 1 : 0;
  return (
    <li className="nd-Layer">
      <div className="nd-Layer-line">
        <code title={layer.digest}>{shortDigest(layer.digest)}</code>
        <span className="nd-Layer-bytes">
          {formatBytes(layer.done)} / {formatBytes(layer.total)}
        </span>
      </div>
      <ProgressBar
        label={`Layer ${shortDigest(layer.digest)}`}
        fraction={fraction}
        small
      />
    </li>
  );
}

function TaskOutcome({ task }: { task: ITask }): JSX.Element | null {
  if (task.error) {
    return (
      <pre className="nd-Code nd-Problem" aria-label="Task error">
        {task.error}
      </pre>
    );
  }
  if (!task.result) {
    return null;
  }
  if (task.kind === 'verify') {
    return (
      <pre className="nd-Code" aria-label="Verification">
        {task.result.ok ? '✔ ' : '✘ '}
        {String(task.result.summary ?? '')}
      </pre>
    );
  }
  return (
    <div className="nd-Task-result" aria-label="Pushed image">
      <code>{String(task.result.image ?? task.target ?? '')}</code>
      {task.result.digest ? (
        <code className="nd-Digest" title={String(task.result.digest)}>
          @{String(task.result.digest)}
        </code>
      ) : null}
    </div>
  );
}

/** A theme-aware progress bar with its percentage, as an ARIA progressbar. */
export function ProgressBar(props: {
  label: string;
  fraction: number;
  small?: boolean;
}): JSX.Element {
  const value = percent(props.fraction);
  return (
    <div className={`nd-Progress${props.small ? ' nd-mod-small' : ''}`}>
      <div
        className="nd-Progress-track"
        role="progressbar"
        aria-label={props.label}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={value}
      >
        <div className="nd-Progress-fill" style={{ width: `${value}%` }} />
      </div>
      <span className="nd-Progress-text">{value}%</span>
    </div>
  );
}
