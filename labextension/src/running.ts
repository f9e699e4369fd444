import { IRunningSessionManagers, IRunningSessions } from '@jupyterlab/running';
import { IDisposable } from '@lumino/disposable';

import { deployIcon } from './icons';
import { DeploymentsModel } from './model';

/**
 * List the running model servers in JupyterLab's Running sidebar, with a Stop button each
 * (and Stop All); clicking one shows it in the Deployments sidebar.
 */
export function addRunningManager(
  managers: IRunningSessionManagers,
  model: DeploymentsModel,
  show: (ref: string) => void
): IDisposable {
  const running = () =>
    model.servers.filter(server => server.status === 'running');
  return managers.add({
    name: 'Model servers',
    supportsMultipleViews: false,
    running: () =>
      running().map((server): IRunningSessions.IRunningItem => ({
        className: 'nd-RunningItem',
        icon: () => deployIcon,
        label: () => server.ref,
        labelTitle: () => `${server.ref}\n${server.url}`,
        detail: () => server.url,
        open: () => show(server.ref),
        shutdown: () => void model.stop(server.id)
      })),
    refreshRunning: () => void model.refresh(),
    runningChanged: model.serversChanged,
    shutdownAll: () => {
      for (const server of running()) {
        void model.stop(server.id);
      }
    },
    shutdownLabel: 'Stop',
    shutdownAllLabel: 'Stop All',
    shutdownAllConfirmationText:
      'Stop all model servers started from the Deployments sidebar?'
  });
}
