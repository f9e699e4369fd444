import * as React from 'react';

import { formatBytes, formatTime, shortType } from '../format';
import { IBundleSummary, IVersionSummary } from '../types';

export interface IBundleListProps {
  bundles: readonly IBundleSummary[];
  selected: string | null;
  onSelect: (ref: string) => void;
}

/** The bundles of the store, each with its versions (newest first) and their tags. */
export function BundleList(props: IBundleListProps): JSX.Element {
  if (props.bundles.length === 0) {
    return (
      <p className="nd-Empty">
        No bundles in the store yet. Capture one from a notebook:{' '}
        <code>nd.capture(model, name="iris", sample=X[:5])</code>
      </p>
    );
  }
  return (
    <ul className="nd-BundleList" aria-label="Model bundles">
      {props.bundles.map(bundle => (
        <li key={bundle.name} className="nd-Bundle" data-bundle={bundle.name}>
          <div className="nd-Bundle-name">{bundle.name}</div>
          <ul
            className="nd-VersionList"
            aria-label={`Versions of ${bundle.name}`}
          >
            {bundle.versions.map(version => (
              <VersionItem
                key={version.version}
                version={version}
                selected={props.selected === version.ref}
                onSelect={props.onSelect}
              />
            ))}
          </ul>
        </li>
      ))}
    </ul>
  );
}

function VersionItem(props: {
  version: IVersionSummary;
  selected: boolean;
  onSelect: (ref: string) => void;
}): JSX.Element {
  const { version } = props;
  const select = () => props.onSelect(version.ref);
  return (
    <li
      className={`nd-Version${props.selected ? ' nd-mod-selected' : ''}`}
      tabIndex={0}
      aria-current={props.selected ? 'true' : undefined}
      aria-label={`${version.ref}${version.tags.length ? ` (${version.tags.join(', ')})` : ''}`}
      title={`${version.ref}\n${version.model_type}`}
      data-ref={version.ref}
      onClick={select}
      onKeyDown={event => {
        if (event.key === 'Enter' || event.key === ' ') {
          event.preventDefault();
          select();
        }
      }}
    >
      <div className="nd-Version-line">
        <span className="nd-Version-id">{version.version}</span>
        {version.tags.map(tag => (
          <span key={tag} className="nd-Tag">
            {tag}
          </span>
        ))}
      </div>
      <div className="nd-Version-meta">
        <span title={version.model_type}>{shortType(version.model_type)}</span>
        <span>{formatTime(version.created)}</span>
        <span>{formatBytes(version.size)}</span>
      </div>
    </li>
  );
}
