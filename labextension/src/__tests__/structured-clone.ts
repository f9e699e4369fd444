// jsdom has no structuredClone, which vega-lite calls; Node's own (v8's serializer) stands in for it.
// Set up for every test (jest.config.js setupFiles), before anything imports vega-embed.
declare function require(name: 'v8'): {
  serialize(value: unknown): unknown;
  deserialize(data: unknown): unknown;
};

if (typeof globalThis.structuredClone !== 'function') {
  const v8 = require('v8');
  globalThis.structuredClone = <T>(value: T): T =>
    v8.deserialize(v8.serialize(value)) as T;
}
