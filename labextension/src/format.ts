/** Small text formatters for the sidebar. */

/** `1536` → `1.5 KB`. */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !isFinite(bytes)) {
    return '';
  }
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** An ISO time in the reader's locale, or the text itself if it is not a time. */
export function formatTime(iso: string | null | undefined): string {
  if (!iso) {
    return '';
  }
  const date = new Date(iso);
  return isNaN(date.getTime()) ? iso : date.toLocaleString();
}

/** `sklearn.linear_model._logistic.LogisticRegression` → `LogisticRegression`. */
export function shortType(modelType: string | null | undefined): string {
  if (!modelType) {
    return '';
  }
  const parts = modelType.split('.');
  return parts[parts.length - 1];
}

/** A fraction 0…1 as a whole percentage, clamped. */
export function percent(fraction: number | null | undefined): number {
  if (fraction === null || fraction === undefined || !isFinite(fraction)) {
    return 0;
  }
  return Math.round(Math.min(1, Math.max(0, fraction)) * 100);
}

/** `sha256:abcdef…` → `abcdef123456`. */
export function shortDigest(digest: string): string {
  const hex = digest.includes(':') ? digest.split(':')[1] : digest;
  return hex.slice(0, 12);
}

/**
 * JSON for reading in a narrow panel: an object's keys one per line, and a list of rows one row
 * per line (`{"instances": [[5.1, 3.5], ...]}`), anything deeper on one line.
 */
export function compactJson(value: unknown): string {
  const line = (v: unknown) => JSON.stringify(v);
  // rows (lists of lists or objects) and long lists go one item per line
  const isRows = (v: unknown): v is unknown[] =>
    Array.isArray(v) &&
    (v.some(item => item !== null && typeof item === 'object') ||
      line(v).length > 60);
  const list = (items: unknown[], indent: string) =>
    items.length === 0
      ? '[]'
      : `[\n${items.map(item => indent + '  ' + line(item)).join(',\n')}\n${indent}]`;
  if (Array.isArray(value)) {
    return list(value, '');
  }
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).map(
      ([key, v]) =>
        `  ${JSON.stringify(key)}: ${isRows(v) ? list(v, '  ') : line(v)}`
    );
    return entries.length === 0 ? '{}' : `{\n${entries.join(',\n')}\n}`;
  }
  return line(value) ?? String(value);
}

/** A share 0…1 as a percentage to a tenth, rounded down so that 99.96 % never reads as 100 %. */
export function formatShare(fraction: number): string {
  if (!isFinite(fraction)) {
    return '';
  }
  const tenths = Math.floor(Math.min(1, Math.max(0, fraction)) * 1000);
  return `${tenths % 10 === 0 ? tenths / 10 : (tenths / 10).toFixed(1)}%`;
}

/** A value as JSON on one line, cut to `limit` characters with an ellipsis (a refusal's message is long). */
export function shortJson(value: unknown, limit = 60): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > limit ? `${text.slice(0, limit - 1)}…` : text;
}
