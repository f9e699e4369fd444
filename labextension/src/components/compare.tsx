import * as React from 'react';

import { formatBytes, formatShare, shortJson } from '../format';
import { IComparison, IFootprint, IReplay } from '../types';

/** A version the shown one can be compared with. */
export interface ICompareCandidate {
  ref: string;
  version: string;
  tags: string[];
}

export interface ICompareProps {
  /** The version shown in the details (`name:version`). */
  reference: string;
  /** The other versions of the same name, newest first. */
  candidates: ICompareCandidate[];
  /** The comparison of moving from `old` to `next`, once fetched. */
  comparison: (old: string, next: string) => IComparison | undefined;
  isBusy: (key: string) => boolean;
  onCompare: (old: string, next: string, measure: boolean) => void;
}

/**
 * "Compare with…": choose another version of the same name; the deployment diff of moving from it
 * to the shown version (or back, swapped) is fetched and shown: breaking schema changes first, the
 * agreement on the old version's sample, the lock, the sizes, and the serving cost once measured.
 */
export function CompareVersions(props: ICompareProps): JSX.Element {
  const [other, setOther] = React.useState('');
  const [swapped, setSwapped] = React.useState(false);
  if (props.candidates.length === 0) {
    return (
      <p className="nd-Empty">No other version of this name to compare.</p>
    );
  }
  const [old, next] = swapped
    ? [props.reference, other]
    : [other, props.reference];
  const key = `${old}>${next}`;
  const comparison = other ? props.comparison(old, next) : undefined;
  const comparing = props.isBusy(`compare:${key}`);
  const measuring = props.isBusy(`measure:${key}`);
  const choose = (ref: string, swap: boolean) => {
    setOther(ref);
    setSwapped(swap);
    if (ref) {
      const [from, to] = swap ? [props.reference, ref] : [ref, props.reference];
      if (!props.comparison(from, to)) {
        props.onCompare(from, to, false);
      }
    }
  };
  return (
    <div className="nd-Compare" aria-label="Compare versions">
      <div className="nd-Actions">
        <select
          className="jp-mod-styled"
          aria-label={`Compare ${props.reference} with`}
          value={other}
          onChange={event => choose(event.target.value, swapped)}
        >
          <option value="">Compare with…</option>
          {props.candidates.map(c => (
            <option key={c.ref} value={c.ref}>
              {c.version}
              {c.tags.length ? ` (${c.tags.join(', ')})` : ''}
            </option>
          ))}
        </select>
        {other ? (
          <button
            className="jp-Button jp-mod-styled"
            aria-label="Swap old and new"
            title="Swap which version is the old one"
            onClick={() => choose(other, !swapped)}
          >
            Swap
          </button>
        ) : null}
      </div>
      {other && comparing && !comparison ? (
        <p className="nd-Empty">Comparing…</p>
      ) : null}
      {comparison ? (
        <ComparisonView
          comparison={comparison}
          measuring={measuring}
          onMeasure={() => props.onCompare(old, next, true)}
        />
      ) : null}
    </div>
  );
}

/** One comparison, as `Comparison._repr_html_` shows it in a notebook. */
export function ComparisonView(props: {
  comparison: IComparison;
  measuring: boolean;
  onMeasure: () => void;
}): JSX.Element {
  const c = props.comparison;
  const footprints = c.footprints;
  const lock = [
    ...c.lock.added.map(pin => `+${pin}`),
    ...c.lock.removed.map(pin => `−${pin}`),
    ...c.lock.changed.map(ch => `${ch.name} ${ch.old} → ${ch.new}`)
  ];
  return (
    <div
      className="nd-Card nd-Comparison"
      aria-label={`Comparison of ${c.old} → ${c.new}`}
      data-breaking={c.breaking ? 'true' : 'false'}
    >
      <div className="nd-Card-head">
        <span className="nd-Card-title">
          {c.old} → {c.new}
        </span>
        <span
          className={`nd-Badge ${c.breaking ? 'nd-mod-failed' : 'nd-mod-succeeded'}`}
        >
          {c.breaking ? 'breaking' : 'compatible'}
        </span>
      </div>
      {c.schema.length === 0 ? (
        <p>Schema unchanged.</p>
      ) : (
        <ul className="nd-Changes" aria-label="Schema changes">
          {c.schema.map((change, i) => (
            <li
              key={i}
              className={change.breaking ? 'nd-mod-breaking' : undefined}
            >
              {change.breaking ? (
                <span className="nd-Badge nd-mod-failed">breaks</span>
              ) : null}{' '}
              {change.what}
            </li>
          ))}
        </ul>
      )}
      <dl className="nd-Facts">
        <Agreement label="Sample agreement" replay={c.sample} />
        {c.traffic ? (
          <Agreement label="Traffic agreement" replay={c.traffic} />
        ) : null}
        <dt>Lock</dt>
        <dd aria-label="Lock changes">
          {lock.length ? (
            <ul className="nd-Lock">
              {lock.map(line => (
                <li key={line}>
                  <code>{line}</code>
                </li>
              ))}
            </ul>
          ) : (
            'unchanged'
          )}
        </dd>
        <dt>Bundle size</dt>
        <dd>{pair(c.sizes.old, c.sizes.new, formatBytes)}</dd>
        {c.dependency_layers ? (
          <>
            <dt>Dependency layer</dt>
            <dd>
              {pair(
                c.dependency_layers.old,
                c.dependency_layers.new,
                formatBytes
              )}
            </dd>
          </>
        ) : null}
        {footprints
          ? SERVING.map(([label, figure, show]) => (
              <React.Fragment key={label}>
                <dt>{label}</dt>
                <dd aria-label={label}>
                  {pair(figure(footprints.old), figure(footprints.new), show)}
                </dd>
              </React.Fragment>
            ))
          : null}
      </dl>
      {c.footprints ? null : (
        <button
          className="jp-Button jp-mod-styled"
          aria-label="Measure start, latency, memory"
          title="Start each version in a fresh Python and call it (seconds)"
          disabled={props.measuring}
          onClick={props.onMeasure}
        >
          {props.measuring ? 'Measuring…' : 'Measure start, latency, memory'}
        </button>
      )}
      {c.notes.length ? (
        <ul className="nd-Notes" aria-label="Notes">
          {c.notes.map((note, i) => (
            <li key={i}>{note}</li>
          ))}
        </ul>
      ) : null}
    </div>
  );
}

function Agreement(props: {
  label: string;
  replay: IReplay | null;
}): JSX.Element {
  const replay = props.replay;
  return (
    <>
      <dt>{props.label}</dt>
      <dd aria-label={props.label}>
        {replay ? (
          <>
            <strong
              className={replay.agreement < 1 ? 'nd-mod-differs' : undefined}
            >
              {formatShare(replay.agreement)}
            </strong>{' '}
            of {replay.rows} rows
            {replay.worst.length ? (
              <ul className="nd-Lock">
                {replay.worst.slice(0, 3).map((d, i) => (
                  <li key={i}>
                    {d.method}: was <code>{shortJson(d.recorded)}</code>, now{' '}
                    <code>{shortJson(d.answered)}</code>
                  </li>
                ))}
              </ul>
            ) : null}
          </>
        ) : (
          'none: the new version has none of the old one’s methods'
        )}
      </dd>
    </>
  );
}

const seconds = (s: number) => `${s.toFixed(2)} s`;
const milliseconds = (ms: number) => `${ms.toFixed(2)} ms`;

/** The serving figures of a measured comparison: label, figure of a footprint, how it is shown. */
const SERVING: [string, (f: IFootprint) => number, (v: number) => string][] = [
  ['Start', f => f.start_seconds, seconds],
  ['Latency p50', f => f.latency_ms.p50, milliseconds],
  ['Latency p99', f => f.latency_ms.p99, milliseconds],
  ['Peak memory', f => f.peak_rss_bytes, formatBytes]
];

/** `old → new (1.20x)`. */
function pair(
  old: number,
  next: number,
  show: (value: number) => string
): string {
  const ratio = old ? ` (${(next / old).toFixed(2)}x)` : '';
  return `${show(old)} → ${show(next)}${ratio}`;
}
