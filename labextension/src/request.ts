import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** Where the server extension's routes live, under the Jupyter server's base URL. */
export const NAMESPACE = 'notebook-deploy';

/**
 * Call a route of the notebook-deploy server extension.
 *
 * `ServerConnection.makeRequest` adds the token and XSRF headers. A non-2xx answer throws a
 * `ServerConnection.ResponseError` whose message is the server's own `message`.
 */
export async function requestAPI<T>(
  endPoint: string,
  serverSettings: ServerConnection.ISettings,
  init: RequestInit = {}
): Promise<T> {
  const url = URLExt.join(serverSettings.baseUrl, NAMESPACE, endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, serverSettings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  const text = await response.text();
  let data: unknown = text;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
  }
  if (!response.ok) {
    throw new ServerConnection.ResponseError(
      response,
      answerMessage(data, response)
    );
  }
  return data as T;
}

/** A JSON request: the method and the body encoded. */
export function jsonRequest(method: string, body?: unknown): RequestInit {
  return body === undefined
    ? { method }
    : {
        method,
        body: JSON.stringify(body),
        headers: { 'Content-Type': 'application/json' }
      };
}

/** One path segment, encoded (bundle names, versions and tags are user-chosen). */
export function segment(value: string): string {
  return encodeURIComponent(value);
}

/** What went wrong, in the words a person should read: the server's `message` first. */
export function errorMessage(error: unknown): string {
  if (error instanceof ServerConnection.ResponseError) {
    return error.message;
  }
  if (error instanceof ServerConnection.NetworkError) {
    return `Cannot reach the Jupyter server: ${error.message}`;
  }
  if (error instanceof Error) {
    return error.message;
  }
  return String(error);
}

function answerMessage(data: unknown, response: Response): string {
  const message =
    data && typeof data === 'object' && 'message' in data
      ? data.message
      : undefined;
  if (typeof message === 'string' && message) {
    return message;
  }
  if (response.status === 404 && !(data && typeof data === 'object')) {
    return (
      `${response.url} was not found (404): the notebook-deploy server extension is not enabled. ` +
      'Install notebook-deploy in the Python environment of the Jupyter server and restart it ' +
      '(`jupyter server extension list` should show notebook_deploy.jupyter.server enabled).'
    );
  }
  if (typeof data === 'string' && data.trim() && data.length < 500) {
    return `${response.status} ${response.statusText}: ${data.trim()}`;
  }
  return `${response.status} ${response.statusText || 'error'} from ${response.url}`;
}
