/** What the test request form offers for a bundle's input: files for binary rows, a prompt for text. */

import { IBundleDetails } from './types';

/** The schema kinds whose rows are files, sent as base64 text (`OBJECT_KINDS` in schema.py). */
export const FILE_KINDS: ReadonlySet<string> = new Set(['image', 'bytes']);

/** The schema kinds a text generator takes, so the form offers a prompt. */
export const PROMPT_KINDS: ReadonlySet<string> = new Set(['str', 'chat']);

/** The `kind` of a version's input schema as its manifest stores it (`image`, `str`...), if any. */
export function inputKind(details: IBundleDetails | undefined): string | null {
  const schema = details?.manifest?.schema as
    { input?: { kind?: unknown } } | undefined;
  const kind = schema?.input?.kind;
  return typeof kind === 'string' ? kind : null;
}

/**
 * A file's bytes as base64 text, the way the model server takes an image or bytes row.
 *
 * `Blob.arrayBuffer` rather than FileReader's data URL: it needs no prefix to cut, and works
 * on every Blob (the browser's and Node's, where the tests run).
 */
export async function readBase64(file: Blob): Promise<string> {
  const bytes = new Uint8Array(await file.arrayBuffer());
  let binary = '';
  // in slices: String.fromCharCode takes its bytes as arguments, and their count is bounded
  for (let start = 0; start < bytes.length; start += BASE64_SLICE) {
    binary += String.fromCharCode(
      ...bytes.subarray(start, start + BASE64_SLICE)
    );
  }
  return btoa(binary);
}

const BASE64_SLICE = 0x8000;
