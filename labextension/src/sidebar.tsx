import { ReactWidget, UseSignal, refreshIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { BundleList } from './components/bundles';
import { ICompareCandidate } from './components/compare';
import { VersionDetails } from './components/details';
import { ServerList } from './components/servers';
import { TaskList } from './components/tasks';
import { askPushTarget, askTagMove, IPushTarget } from './dialogs';
import { deployIcon } from './icons';
import { DeploymentsModel, splitRef } from './model';
import { IServer } from './types';

/** The id of the sidebar widget (and of its tab, for `page.sidebar.openTab`). */
export const SIDEBAR_ID = 'notebook-deploy-sidebar';

/**
 * The "Deployments" sidebar: bundles and their versions, the selected version's details and
 * actions, the model servers started from here and the tasks (pushes, verifications).
 */
export class DeploymentsSidebar extends ReactWidget {
  constructor(options: DeploymentsSidebar.IOptions) {
    super();
    this.model = options.model;
    this._openUrl =
      options.openUrl ?? (url => window.open(url, '_blank', 'noopener'));
    this.id = SIDEBAR_ID;
    this.addClass('nd-Sidebar');
    this.title.icon = deployIcon;
    this.title.caption = 'Deployments';
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', 'Deployments');
  }

  readonly model: DeploymentsModel;

  /** Ask where to push a version, then push it. */
  async push(ref: string): Promise<void> {
    const target = await askPushTarget(ref, this._lastPush(ref));
    if (target) {
      this._pushDefaults = target;
      await this.model.push(ref, target);
    }
  }

  /** Ask which tag to move to which version of a bundle, then move it. */
  async moveTag(ref: string): Promise<void> {
    const [name, version] = splitRef(ref);
    const bundle = this.model.bundles.find(b => b.name === name);
    const versions = bundle ? bundle.versions.map(v => v.version) : [version];
    const move = await askTagMove(name, versions, { tag: 'latest', version });
    if (move) {
      await this.model.moveTag(name, move.tag, move.version);
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this.model.refresh();
  }

  protected render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => this._renderView()}
      </UseSignal>
    );
  }

  private _renderView(): JSX.Element {
    const model = this.model;
    const selected = model.selected;
    return (
      <div className="nd-View">
        <header className="nd-Header">
          <h2 className="nd-Header-title">Deployments</h2>
          <button
            className="jp-ToolbarButtonComponent nd-IconButton"
            aria-label="Refresh deployments"
            title="Refresh"
            onClick={() => void model.refresh()}
          >
            <refreshIcon.react tag="span" />
          </button>
        </header>
        {model.loadError ? (
          <p className="nd-Problem" role="alert">
            {model.loadError}
          </p>
        ) : null}
        <section className="nd-Section-block" aria-label="Bundles">
          <h3 className="nd-Section-title">Bundles</h3>
          {model.loaded ? (
            <BundleList
              bundles={model.bundles}
              selected={selected}
              onSelect={ref => void model.select(ref)}
            />
          ) : (
            <p className="nd-Empty">Loading…</p>
          )}
        </section>
        {selected ? (
          <section className="nd-Section-block" aria-label="Version details">
            <h3 className="nd-Section-title">Version</h3>
            <VersionDetails
              reference={selected}
              details={model.selectedDetails}
              loading={model.isBusy(`details:${selected}`)}
              serving={model.isBusy(`serve:${selected}`)}
              verifying={model.isBusy(`verify:${selected}`)}
              onServe={() => void model.serve(selected)}
              onPush={() => void this.push(selected)}
              onVerify={() => void model.verify(selected)}
              onMoveTag={() => void this.moveTag(selected)}
              compare={{
                candidates: this._otherVersions(selected),
                comparison: (old, next) => model.comparison(old, next),
                isBusy: key => model.isBusy(key),
                onCompare: (old, next, measure) =>
                  void model.compare(old, next, measure)
              }}
            />
          </section>
        ) : null}
        {model.servers.length > 0 ? (
          <section className="nd-Section-block" aria-label="Endpoints">
            <h3 className="nd-Section-title">Endpoints</h3>
            <ServerList
              servers={model.servers}
              details={ref => model.details(ref)}
              answer={id => model.answer(id)}
              isBusy={key => model.isBusy(key)}
              onStop={(server: IServer) => void model.stop(server.id)}
              onOpenDocs={(server: IServer) => this._openUrl(server.docs_url)}
              onPredict={(server, method, instances) =>
                void model.predict(server.id, instances, method)
              }
              onLogs={(server: IServer) => model.logs(server.id)}
              generation={id => model.generation(id)}
              onGenerate={(server, prompt) =>
                void model.generate(server.id, prompt)
              }
              monitor={id => model.monitor(id)}
            />
          </section>
        ) : null}
        {model.tasks.length > 0 ? (
          <section className="nd-Section-block" aria-label="Tasks">
            <h3 className="nd-Section-title">Tasks</h3>
            <TaskList
              tasks={model.tasks}
              isBusy={key => model.isBusy(key)}
              onCancel={task => void model.cancelTask(task.id)}
            />
          </section>
        ) : null}
      </div>
    );
  }

  /** The versions of the selected one's name other than it, newest first, with their tags. */
  private _otherVersions(ref: string): ICompareCandidate[] {
    const [name, version] = splitRef(ref);
    const bundle = this.model.bundles.find(b => b.name === name);
    return (bundle?.versions ?? [])
      .filter(v => v.version !== version && v.ref !== ref)
      .map(v => ({ ref: v.ref, version: v.version, tags: v.tags }));
  }

  private _lastPush(ref: string): Partial<IPushTarget> {
    const last = this._pushDefaults;
    if (!last) {
      return { backend: 'auto' };
    }
    // the same registry and backend as last time, this bundle's name and version
    const [name, version] = splitRef(ref);
    const slash = last.image.indexOf('/');
    const host =
      slash > 0 && /[.:]|^localhost$/.test(last.image.slice(0, slash))
        ? last.image.slice(0, slash) + '/'
        : '';
    return { ...last, image: `${host}${name}:${version.slice(0, 20)}` };
  }

  private _openUrl: (url: string) => void;
  private _pushDefaults: IPushTarget | null = null;
}

export namespace DeploymentsSidebar {
  export interface IOptions {
    model: DeploymentsModel;
    /** Opens a URL (the API docs); `window.open` by default. */
    openUrl?: (url: string) => void;
  }
}
