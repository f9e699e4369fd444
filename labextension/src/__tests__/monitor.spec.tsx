import { ReactWidget } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';
import * as React from 'react';

import { CHART_ORDER, MonitorView } from '../components/monitor';
import { IMonitorAnswer } from '../types';
import { server, waitFor } from './fixtures';
// made by serving/watch.py's builders (tests/test_watch.py checks that they still make these)
import fixture from './monitor-charts.json';

/** The fixture's answer with only the first `times` reads of its series. */
function answerAt(times: number): IMonitorAnswer {
  const keep = new Set(fixture.points.map(p => p.time).slice(0, times * 2));
  const charts: Record<string, Record<string, unknown>> = {};
  for (const [name, spec] of Object.entries(fixture.charts)) {
    const data = (spec as { data: { values: { time?: string }[] } }).data;
    const values =
      name === 'drift'
        ? data.values
        : data.values.filter(v => keep.has(v.time as string));
    charts[name] = { ...spec, data: { values } };
  }
  return {
    url: 'http://127.0.0.1:40123',
    updated: '2026-12-05T23:00:04+00:00',
    points: times * 2,
    drift: { threshold: 0.2, message: '400 rows in the window' },
    charts
  };
}

/** The data marks (points of lines, bars) a chart has drawn. */
function marks(host: HTMLElement, chart: string): number {
  const node = host.querySelector(`[data-chart="${chart}"] svg`);
  return node
    ? node.querySelectorAll(
        '.mark-symbol.role-mark path, .mark-rect.role-mark path'
      ).length
    : 0;
}

describe('MonitorView', () => {
  let widget: Widget;
  let loads: string[];

  function show(answers: IMonitorAnswer[], interval = 50): void {
    loads = [];
    const load = async (id: string) => {
      loads.push(id);
      return answers[Math.min(loads.length, answers.length) - 1];
    };
    widget = ReactWidget.create(
      <MonitorView server={server} load={load} interval={interval} />
    );
    Widget.attach(widget, document.body);
  }

  afterEach(() => {
    if (!widget.isDisposed) {
      widget.dispose();
    }
  });

  it('draws every chart as SVG, and more points at each read', async () => {
    show([answerAt(1), answerAt(2), answerAt(3)]);
    await waitFor(() =>
      CHART_ORDER.every(name => marks(widget.node, name) > 0)
    );
    const first = marks(widget.node, 'requests');
    await waitFor(() => marks(widget.node, 'requests') > first, 5000);
    expect(loads[0]).toBe(server.id);
    // three reads, two versions: a point each
    await waitFor(() => marks(widget.node, 'requests') === 6, 5000);
    expect(marks(widget.node, 'drift')).toBe(4); // a bar per feature
    const drift = widget.node.querySelector('[data-chart="drift"]')!;
    expect(drift.textContent).toContain('threshold 0.2');
    expect(drift.querySelector('.mark-rule line, .mark-rule path')).not.toBe(
      null
    );
  });

  it('stops asking once it is closed', async () => {
    show([answerAt(1)], 20);
    await waitFor(() => loads.length >= 2);
    widget.dispose();
    const asked = loads.length;
    await new Promise(resolve => setTimeout(resolve, 150));
    expect(loads.length).toBe(asked);
  });

  it('shows why a read failed and keeps asking', async () => {
    loads = [];
    let fail = true;
    const load = async (id: string) => {
      loads.push(id);
      if (fail) {
        throw new Error('the server for iris:1 has stopped; start it again');
      }
      return answerAt(1);
    };
    widget = ReactWidget.create(
      <MonitorView server={server} load={load} interval={20} />
    );
    Widget.attach(widget, document.body);
    await waitFor(() => widget.node.querySelector('[role="alert"]') !== null);
    expect(widget.node.textContent).toContain('has stopped');
    fail = false;
    await waitFor(() => widget.node.querySelector('[role="alert"]') === null);
    expect(widget.node.textContent).toContain('2 points');
  });
});
