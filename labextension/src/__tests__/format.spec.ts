import {
  compactJson,
  formatBytes,
  formatShare,
  percent,
  shortDigest,
  shortJson,
  shortType
} from '../format';

describe('format', () => {
  it('writes rows one per line', () => {
    expect(
      compactJson({
        instances: [
          [5.1, 3.5, 1.4, 0.2],
          [4.9, 3.0, 1.4, 0.2]
        ]
      })
    ).toBe(
      '{\n  "instances": [\n    [5.1,3.5,1.4,0.2],\n    [4.9,3,1.4,0.2]\n  ]\n}'
    );
    expect(compactJson({ predictions: [0, 1] })).toBe(
      '{\n  "predictions": [0,1]\n}'
    );
    expect(compactJson({})).toBe('{}');
    expect(JSON.parse(compactJson({ a: [{ b: 1 }], c: 'd' }))).toEqual({
      a: [{ b: 1 }],
      c: 'd'
    });
  });

  it('shortens sizes, fractions, digests and types', () => {
    expect(formatBytes(1536)).toBe('1.5 KB');
    expect(formatBytes(153)).toBe('153 B');
    expect(percent(0.999)).toBe(100);
    expect(percent(1.2)).toBe(100);
    expect(percent(NaN)).toBe(0);
    expect(shortDigest('sha256:abcdef0123456789')).toBe('abcdef012345');
    expect(shortType('sklearn.linear_model._logistic.LogisticRegression')).toBe(
      'LogisticRegression'
    );
  });
});

describe('formatShare', () => {
  it('shows a share to a tenth of a percent, never rounding up to 100 %', () => {
    expect(formatShare(1)).toBe('100%');
    expect(formatShare(14 / 15)).toBe('93.3%');
    expect(formatShare(0.9996)).toBe('99.9%');
    expect(formatShare(0.5)).toBe('50%');
    expect(formatShare(0)).toBe('0%');
  });
});

describe('shortJson', () => {
  it('writes a value on one line, cut with an ellipsis', () => {
    expect(shortJson([1, 'a'])).toBe('[1,"a"]');
    expect(shortJson('refused: ' + 'x'.repeat(100), 20)).toBe(
      '"refused: xxxxxxxxx…'
    );
    expect(shortJson(undefined)).toBe('undefined');
  });
});
