import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { IRunningSessionManagers } from '@jupyterlab/running';

import { DeploymentsModel } from './model';
import { addRunningManager } from './running';
import { DeploymentsSidebar, SIDEBAR_ID } from './sidebar';

/** The palette commands. */
export namespace CommandIDs {
  export const open = 'notebook-deploy:open';
  export const refresh = 'notebook-deploy:refresh';
}

/**
 * The "Deployments" sidebar of notebook-deploy: bundles of the local store, local model
 * servers and image pushes, through the notebook-deploy server extension's REST API.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: 'notebook-deploy:plugin',
  description:
    'The Deployments sidebar: model bundles, local endpoints and image pushes.',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette, IRunningSessionManagers],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    runningManagers: IRunningSessionManagers | null
  ) => {
    let sidebar: DeploymentsSidebar | null = null;
    const model = new DeploymentsModel({
      serverSettings: app.serviceManager.serverSettings,
      onError: message => {
        Notification.error(message, { autoClose: 10000 });
      },
      // refresh only while the sidebar is shown and the page visible
      standby: () =>
        sidebar !== null && sidebar.isVisible ? 'when-hidden' : true
    });
    sidebar = new DeploymentsSidebar({ model });
    app.shell.add(sidebar, 'left', { rank: 900 });
    if (restorer) {
      restorer.add(sidebar, SIDEBAR_ID);
    }

    const show = (ref?: string) => {
      app.shell.activateById(SIDEBAR_ID);
      if (ref) {
        void model.select(ref);
      }
    };
    app.commands.addCommand(CommandIDs.open, {
      label: 'Open the Deployments Sidebar',
      caption: 'Model bundles, local endpoints and image pushes',
      execute: () => show()
    });
    app.commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh Deployments',
      caption: 'Reload bundles, model servers and tasks',
      execute: () => model.refresh()
    });
    if (palette) {
      for (const command of [CommandIDs.open, CommandIDs.refresh]) {
        palette.addItem({ command, category: 'Deployments' });
      }
    }
    if (runningManagers) {
      addRunningManager(runningManagers, model, ref => show(ref));
    }
  }
};

export default plugin;
