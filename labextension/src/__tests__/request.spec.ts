import { ServerConnection } from '@jupyterlab/services';

import { errorMessage, requestAPI, streamAPI } from '../request';
import { eventStream } from './fixtures';

const settings = ServerConnection.makeSettings({
  baseUrl: 'http://localhost:8888/lab-base/'
});

function answer(
  status: number,
  body: string,
  contentType = 'application/json'
): Response {
  return new Response(body, {
    status,
    headers: { 'Content-Type': contentType }
  });
}

let makeRequest: jest.SpyInstance;

beforeEach(() => {
  makeRequest = jest.spyOn(ServerConnection, 'makeRequest');
});

afterEach(() => {
  makeRequest.mockRestore();
});

describe('requestAPI', () => {
  it('calls the route under the base URL and parses JSON', async () => {
    makeRequest.mockResolvedValue(answer(200, '{"bundles": []}'));
    const data = await requestAPI<{ bundles: unknown[] }>('bundles', settings);
    expect(data).toEqual({ bundles: [] });
    expect(makeRequest.mock.calls[0][0]).toBe(
      'http://localhost:8888/lab-base/notebook-deploy/bundles'
    );
  });

  it("throws a ResponseError carrying the server's message", async () => {
    makeRequest.mockResolvedValue(
      answer(404, '{"message": "no bundle named \'nope\': capture one first"}')
    );
    const error = await requestAPI<never>(
      'bundles/nope/latest',
      settings
    ).catch((e: ServerConnection.ResponseError) => e);
    expect(error).toBeInstanceOf(ServerConnection.ResponseError);
    expect(error.response.status).toBe(404);
    expect(errorMessage(error)).toBe(
      "no bundle named 'nope': capture one first"
    );
  });

  it('says the server extension is missing when the route itself is not found', async () => {
    makeRequest.mockResolvedValue(
      answer(404, '<html>404: Not Found</html>', 'text/html')
    );
    const error = await requestAPI('bundles', settings).catch(e => e);
    expect(errorMessage(error)).toMatch(/server extension is not enabled/);
    expect(errorMessage(error)).toMatch(/notebook_deploy\.jupyter\.server/);
  });

  it('keeps the status of an answer without a message', async () => {
    makeRequest.mockResolvedValue(answer(500, '{}'));
    const error = await requestAPI('servers', settings).catch(e => e);
    expect(errorMessage(error)).toMatch(/^500/);
  });

  it('maps a failed connection to a NetworkError', async () => {
    makeRequest.mockRejectedValue(new TypeError('Failed to fetch'));
    const error = await requestAPI('bundles', settings).catch(e => e);
    expect(error).toBeInstanceOf(ServerConnection.NetworkError);
    expect(errorMessage(error)).toBe(
      'Cannot reach the Jupyter server: Failed to fetch'
    );
  });
});

describe('streamAPI', () => {
  it('hands over each event as it arrives, however the chunks cut it', async () => {
    const seen: unknown[] = [];
    const chunks = [
      'data: {"text": "Hel',
      'lo"}\n\ndata: {"text": " wörld"}\n',
      '\ndata: {"finish_reason": "length", "usage": {"completion_tokens": 2}}\n\n'
    ];
    makeRequest.mockResolvedValue(eventStream(chunks));
    await streamAPI('servers/1/generate', settings, { method: 'POST' }, data =>
      seen.push(data)
    );
    expect(makeRequest.mock.calls[0][0]).toBe(
      'http://localhost:8888/lab-base/notebook-deploy/servers/1/generate'
    );
    expect(seen).toEqual([
      { text: 'Hello' },
      { text: ' wörld' },
      { finish_reason: 'length', usage: { completion_tokens: 2 } }
    ]);
  });

  it('splits a character whose bytes come in two chunks', async () => {
    const seen: unknown[] = [];
    const bytes = new TextEncoder().encode('data: {"text": "é"}\n\n');
    const cut = bytes.indexOf(0xc3) + 1; // inside the two bytes of é
    makeRequest.mockResolvedValue(
      eventStream([bytes.slice(0, cut), bytes.slice(cut)])
    );
    await streamAPI('g', settings, {}, data => seen.push(data));
    expect(seen).toEqual([{ text: 'é' }]);
  });

  it("throws the server's message when the route refuses", async () => {
    makeRequest.mockResolvedValue(
      answer(404, '{"message": "its model is not a text generator"}')
    );
    await expect(
      streamAPI('servers/1/generate', settings, {}, () => undefined)
    ).rejects.toThrow('its model is not a text generator');
  });
});
