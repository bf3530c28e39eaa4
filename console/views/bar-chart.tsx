/**
 * A stacked bar chart in plain SVG, drawn by Preact: no charting library
 * (docs/console.md, "Size"), no inline style (colours come from classes in
 * app.css, so the CSP's `style-src 'self'` holds and dark mode applies).
 * Every bar segment has a title (its bucket, series and count), and the same
 * numbers are in a table under the chart for screen readers and copying.
 */
import { Text } from './text.js';

export interface Series {
  label: string;
  /** A class of app.css that colours the series (`s-issued`, `s-p0`, ...). */
  tone: string;
  /** One count per bucket. */
  counts: number[];
}

const WIDTH = 800;
const HEIGHT = 180;
const LEFT = 44;
const BOTTOM = 22;

export function BarChart({ id, title, bucket, buckets, series }: { id: string; title: string; bucket: 'hour' | 'day'; buckets: string[]; series: Series[] }) {
  const label = (start: string) => (bucket === 'day' ? start.slice(0, 10) : start.slice(0, 16).replace('T', ' '));
  const totals = buckets.map((_, i) => series.reduce((sum, s) => sum + (s.counts[i] ?? 0), 0));
  const max = Math.max(1, ...totals);
  const plotWidth = WIDTH - LEFT;
  const plotHeight = HEIGHT - BOTTOM;
  const step = plotWidth / Math.max(1, buckets.length);
  const y = (n: number) => (n / max) * plotHeight;
  const ticks = buckets.length <= 1 ? [0] : [0, Math.floor((buckets.length - 1) / 2), buckets.length - 1];
  const busy = buckets.map((_, i) => i).filter((i) => totals[i]! > 0);

  return (
    <figure class="chart" id={id}>
      <figcaption id={`${id}-title`}>{title}</figcaption>
      <svg viewBox={`0 0 ${WIDTH} ${HEIGHT}`} role="img" aria-labelledby={`${id}-title`}>
        <line class="axis" x1={LEFT} y1={plotHeight} x2={WIDTH} y2={plotHeight} />
        <text class="tick" x={LEFT - 6} y={10} text-anchor="end">
          {max}
        </text>
        <text class="tick" x={LEFT - 6} y={plotHeight} text-anchor="end">
          0
        </text>
        {ticks.map((i, n) => (
          // The first and last labels are anchored at their ends, so neither is cut at the edge.
          <text class="tick" x={n === 0 ? LEFT : n === ticks.length - 1 ? WIDTH : LEFT + i * step + step / 2} y={HEIGHT - 4} text-anchor={n === 0 ? 'start' : n === ticks.length - 1 ? 'end' : 'middle'}>
            {label(buckets[i]!)}
          </text>
        ))}
        {buckets.map((bucket, i) => {
          let top = plotHeight;
          return series.map((s) => {
            const n = s.counts[i] ?? 0;
            if (n === 0) return null;
            top -= y(n);
            return (
              <rect class={`bar ${s.tone}`} x={LEFT + i * step + step * 0.1} y={top} width={Math.max(1, step * 0.8)} height={y(n)}>
                <title>{`${label(bucket)}: ${n} ${s.label}`}</title>
              </rect>
            );
          });
        })}
      </svg>
      <ul class="legend">
        {series.map((s) => (
          <li>
            <span class={`swatch ${s.tone}`} aria-hidden="true" />
            <Text value={s.label} short /> {s.counts.reduce((a, b) => a + b, 0)}
          </li>
        ))}
      </ul>
      <details>
        <summary>Counts as a table</summary>
        <div class="table-wrap">
          <table class="chart-table">
            <thead>
              <tr>
                <th scope="col">Bucket (UTC)</th>
                {series.map((s) => (
                  <th scope="col">
                    <Text value={s.label} short />
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {busy.length === 0 && (
                <tr>
                  <td colSpan={series.length + 1}>No records in this window.</td>
                </tr>
              )}
              {busy.map((i) => (
                <tr>
                  <th scope="row">{label(buckets[i]!)}</th>
                  {series.map((s) => (
                    <td>{s.counts[i] ?? 0}</td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </details>
    </figure>
  );
}
