import * as React from 'react';

import { formatTime } from '../format';
import { IBundleDetails } from '../types';
import { CompareVersions, ICompareProps } from './compare';

export interface IVersionDetailsProps {
  reference: string;
  details: IBundleDetails | null;
  loading: boolean;
  serving: boolean;
  verifying: boolean;
  onServe: () => void;
  onPush: () => void;
  onVerify: () => void;
  onMoveTag: () => void;
  /** The "Compare with…" control: the other versions and the comparisons fetched. */
  compare: Omit<ICompareProps, 'reference'>;
}

/**
 * One version in full: its actions, the comparison with another version, recipe, packages, schema
 * and drift reference.
 */
export function VersionDetails(props: IVersionDetailsProps): JSX.Element {
  const { details } = props;
  return (
    <div className="nd-Details" aria-label={`Details of ${props.reference}`}>
      <div className="nd-Details-title">{props.reference}</div>
      <div className="nd-Actions">
        <button
          className="jp-Button jp-mod-styled jp-mod-accept"
          aria-label={`Serve ${props.reference}`}
          disabled={props.serving}
          onClick={props.onServe}
        >
          {props.serving ? 'Starting…' : 'Serve'}
        </button>
        <button
          className="jp-Button jp-mod-styled"
          aria-label={`Push ${props.reference}`}
          onClick={props.onPush}
        >
          Push…
        </button>
        <button
          className="jp-Button jp-mod-styled"
          aria-label={`Verify ${props.reference}`}
          disabled={props.verifying}
          onClick={props.onVerify}
        >
          {props.verifying ? 'Verifying…' : 'Verify'}
        </button>
        <button
          className="jp-Button jp-mod-styled"
          aria-label={`Move a tag of ${props.reference}`}
          onClick={props.onMoveTag}
        >
          Move tag…
        </button>
      </div>
      <CompareVersions
        key={props.reference}
        reference={props.reference}
        {...props.compare}
      />
      {details === null ? (
        <p className="nd-Empty">
          {props.loading ? 'Loading details…' : 'No details.'}
        </p>
      ) : (
        <DetailSections details={details} />
      )}
    </div>
  );
}

function DetailSections({ details }: { details: IBundleDetails }): JSX.Element {
  const input = details.schema?.input;
  return (
    <>
      <dl className="nd-Facts">
        <dt>Model</dt>
        <dd>{details.model_type}</dd>
        <dt>Created</dt>
        <dd>{formatTime(details.created)}</dd>
        <dt>Methods</dt>
        <dd>{details.methods.join(', ')}</dd>
        {input?.description ? (
          <>
            <dt>Input</dt>
            <dd>{input.description}</dd>
          </>
        ) : null}
      </dl>
      {details.warnings && details.warnings.length > 0 ? (
        <ul className="nd-Warnings" aria-label="Warnings">
          {details.warnings.map((warning, i) => (
            <li key={i}>{warning}</li>
          ))}
        </ul>
      ) : null}
      <details className="nd-Section">
        <summary>
          Recipe ({details.recipe ? details.recipe.cells.length : 0} cells)
        </summary>
        {details.recipe ? (
          details.recipe.cells.map((cell, i) => (
            <pre
              key={i}
              className="nd-Code"
              aria-label={`Recipe cell ${i + 1}`}
            >
              <span className="nd-Code-prompt">
                [{cell.execution_count ?? ' '}]
              </span>{' '}
              {cell.source}
            </pre>
          ))
        ) : (
          <p className="nd-Empty">This bundle has no recipe.</p>
        )}
      </details>
      <details className="nd-Section">
        <summary>Packages ({details.lock.length} locked)</summary>
        <ul className="nd-Lock" aria-label="Locked packages">
          {details.lock.map(pin => (
            <li key={pin}>
              <code>{pin}</code>
            </li>
          ))}
        </ul>
      </details>
      <details className="nd-Section">
        <summary>Schema</summary>
        <pre className="nd-Code">{JSON.stringify(details.schema, null, 2)}</pre>
      </details>
      <details className="nd-Section">
        <summary>Drift reference</summary>
        {details.reference ? (
          <>
            <p>{details.reference.rows} rows of reference data</p>
            <ul className="nd-Lock">
              {details.reference.features.map(feature => (
                <li key={feature.name}>
                  <code>{feature.name}</code> {feature.kind}
                </li>
              ))}
            </ul>
          </>
        ) : (
          <p className="nd-Empty">
            No reference statistics: capture with reference= to monitor drift.
          </p>
        )}
      </details>
    </>
  );
}
