import { LabIcon } from '@jupyterlab/ui-components';

/** A rocket: the Deployments sidebar's tab and the Running sidebar's model servers. */
export const deployIcon = new LabIcon({
  name: 'notebook-deploy:deploy',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
    '<g class="jp-icon3" fill="#616161"><path d="M12 2.5c-2.9 1.7-4.8 4.9-4.8 8.5 0 1 .2 2 .5 2.9L5 ' +
    '16.6l2.7 1.1 1.4-1.4h5.8l1.4 1.4 2.7-1.1-2.7-2.7c.3-.9.5-1.9.5-2.9 0-3.6-1.9-6.8-4.8-8.5zm0 ' +
    '6.3a1.9 1.9 0 1 1 0 3.8 1.9 1.9 0 0 1 0-3.8zM9.8 18.2 12 21.5l2.2-3.3z"/></g></svg>'
});
