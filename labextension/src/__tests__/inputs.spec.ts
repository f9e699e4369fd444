import { inputKind, readBase64 } from '../inputs';
import { irisDetails } from './fixtures';

describe('readBase64', () => {
  it('encodes files larger than one slice, every byte value included', async () => {
    const bytes = Uint8Array.from(
      { length: 100_003 },
      (_, i) => (i * 31) % 256
    );
    const encoded = await readBase64(new File([bytes], 'big.bin'));
    const decoded = Uint8Array.from(atob(encoded), c => c.charCodeAt(0));
    expect(decoded).toEqual(bytes);
  });

  it('encodes an empty file as empty text', async () => {
    expect(await readBase64(new File([], 'empty.bin'))).toBe('');
  });
});

describe('inputKind', () => {
  it("reads the kind of the manifest's input schema", () => {
    const details = {
      ...irisDetails,
      manifest: { schema: { input: { type: 'tensor', kind: 'bytes' } } }
    };
    expect(inputKind(details)).toBe('bytes');
  });

  it('is null for a table, or before the details are in', () => {
    const table = {
      ...irisDetails,
      manifest: { schema: { input: { type: 'table', columns: [] } } }
    };
    expect(inputKind(table)).toBeNull();
    expect(inputKind(undefined)).toBeNull();
  });
});
