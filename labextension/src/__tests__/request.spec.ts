import { ServerConnection } from '@jupyterlab/services';

import { errorMessage, requestAPI } from '../request';

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

describe('requestAPI', () => {
  let makeRequest: jest.SpyInstance;

  beforeEach(() => {
    makeRequest = jest.spyOn(ServerConnection, 'makeRequest');
  });

  afterEach(() => {
    makeRequest.mockRestore();
  });

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
