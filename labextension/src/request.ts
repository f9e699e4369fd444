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
  const response = await fetchAPI(endPoint, serverSettings, init);
  const data = parseBody(await response.text());
  if (!response.ok) {
    throw new ServerConnection.ResponseError(
      response,
      answerMessage(data, response)
    );
  }
  return data as T;
}

/**
 * Call a route that answers with Server-Sent Events, handing each event's JSON `data` to
 * `onEvent` as it arrives (a text generator's pieces show while the rest is made). A non-2xx
 * answer throws as `requestAPI` does.
 */
export async function streamAPI(
  endPoint: string,
  serverSettings: ServerConnection.ISettings,
  init: RequestInit,
  onEvent: (data: unknown) => void
): Promise<void> {
  const response = await fetchAPI(endPoint, serverSettings, init);
  if (!response.ok || !response.body) {
    const data = parseBody(await response.text());
    throw new ServerConnection.ResponseError(
      response,
      answerMessage(data, response)
    );
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { done, value } = await reader.read();
    buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
    // events end with a blank line; the last part is an event still coming
    const events = buffer.split(/\r?\n\r?\n/);
    buffer = done ? '' : (events.pop() ?? '');
    for (const event of events) {
      const data = event
        .split(/\r?\n/)
        .filter(line => line.startsWith('data:'))
        .map(line => line.slice(line.startsWith('data: ') ? 6 : 5))
        .join('\n');
      if (data) {
        onEvent(parseBody(data));
      }
    }
    if (done) {
      return;
    }
  }
}

async function fetchAPI(
  endPoint: string,
  serverSettings: ServerConnection.ISettings,
  init: RequestInit
): Promise<Response> {
  const url = URLExt.join(serverSettings.baseUrl, NAMESPACE, endPoint);
  try {
    return await ServerConnection.makeRequest(url, init, serverSettings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
}

/** JSON text decoded; other text as it is. */
function parseBody(text: string): unknown {
  if (text.length > 0) {
    try {
      return JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
  }
  return text;
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
