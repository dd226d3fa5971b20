// Charts drawn as SVG: line charts for curves, shaded tables for matrices, bars for scores.

import { h } from "./dom.js";

const WIDTH = 560;
const HEIGHT = 250;
const MARGIN = { top: 12, right: 16, bottom: 36, left: 54 };

/** About `count` round tick values covering [low, high]. */
export function ticks(low, high, count = 5) {
  if (!(high > low)) return [low];
  const raw = (high - low) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) || raw;
  const values = [];
  for (let value = Math.ceil(low / step) * step; value <= high + step * 1e-9; value += step) {
    values.push(Number(value.toPrecision(12)));
  }
  return values;
}

function label(value) {
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude >= 1e5 || magnitude < 1e-3)) return value.toExponential(1);
  return String(Number(value.toPrecision(4)));
}

/**
 * A line chart of one or more series: [{name, points: [[x, y], ...]}].
 * `yRange` fixes the y axis (say [0, 1] for accuracy); otherwise it fits the data.
 */
export function lineChart({ series, xLabel, yLabel, yRange, title }) {
  const drawn = series.filter((one) => one.points.length > 0);
  if (drawn.length === 0) {
    return h("div", { class: "empty-chart", "data-points": "0" }, `No ${title || "data"} yet`);
  }
  const xs = drawn.flatMap((one) => one.points.map((point) => point[0]));
  const ys = drawn.flatMap((one) => one.points.map((point) => point[1]));
  let [xLow, xHigh] = [Math.min(...xs), Math.max(...xs)];
  let [yLow, yHigh] = yRange || [Math.min(...ys), Math.max(...ys)];
  if (xLow === xHigh) [xLow, xHigh] = [xLow - 1, xHigh + 1];
  if (yLow === yHigh) [yLow, yHigh] = [yLow - 0.5, yHigh + 0.5];
  if (!yRange) {
    const pad = (yHigh - yLow) * 0.06;
    [yLow, yHigh] = [yLow - pad, yHigh + pad];
  }
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const x = (value) => MARGIN.left + ((value - xLow) / (xHigh - xLow)) * plotWidth;
  const y = (value) => MARGIN.top + (1 - (value - yLow) / (yHigh - yLow)) * plotHeight;

  const svg = h("svg:svg", {
    class: "chart",
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "img",
    "aria-label": title || yLabel,
    "data-points": String(ys.length),
  });
  for (const value of ticks(yLow, yHigh)) {
    svg.append(
      h("svg:line", { class: "grid-line", x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(value), y2: y(value) }),
      h("svg:text", { x: MARGIN.left - 6, y: y(value) + 4, "text-anchor": "end" }, label(value)),
    );
  }
  for (const value of ticks(xLow, xHigh, 6)) {
    svg.append(h("svg:text", { x: x(value), y: HEIGHT - MARGIN.bottom + 16, "text-anchor": "middle" }, label(value)));
  }
  svg.append(
    h("svg:line", { class: "axis", x1: MARGIN.left, x2: MARGIN.left, y1: MARGIN.top, y2: HEIGHT - MARGIN.bottom }),
    h("svg:line", { class: "axis", x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: HEIGHT - MARGIN.bottom, y2: HEIGHT - MARGIN.bottom }),
    h("svg:text", { x: MARGIN.left + plotWidth / 2, y: HEIGHT - 4, "text-anchor": "middle" }, xLabel),
    h("svg:text", { x: 12, y: MARGIN.top + plotHeight / 2, "text-anchor": "middle",
      transform: `rotate(-90 12 ${MARGIN.top + plotHeight / 2})` }, yLabel),
  );
  series.forEach((one, index) => {
    if (!one.points.length) return;
    const path = one.points.map((point) => `${x(point[0]).toFixed(1)},${y(point[1]).toFixed(1)}`).join(" ");
    svg.append(h("svg:polyline", { class: `line s${index}`, points: path, "data-series": one.name }));
    if (one.points.length <= 40) {
      for (const point of one.points) {
        svg.append(h("svg:circle", { class: `s${index}`, cx: x(point[0]), cy: y(point[1]), r: 3 },
          h("svg:title", null, `${one.name}: ${label(point[1])} at ${xLabel} ${label(point[0])}`)));
      }
    }
  });
  const legend = h("div", { class: "legend" },
    series.map((one, index) => h("span", null, h("i", { class: `s${index}` }), one.name)));
  return h("div", null, svg, series.length > 1 ? legend : null);
}

/** A matrix as a table whose cells are shaded by value: rows × columns. */
export function matrixTable({ rows, columns, values, corner, format, scale }) {
  const max = scale ?? Math.max(1e-9, ...values.flat());
  const min = Math.min(0, ...values.flat());
  const shade = (value) => {
    const strength = (value - min) / (max - min || 1);
    return {
      background: `rgba(37, 83, 199, ${(0.08 + 0.8 * strength).toFixed(3)})`,
      color: strength > 0.55 ? "#fff" : "",
    };
  };
  return h(
    "table",
    { class: "matrix" },
    h("thead", null, h("tr", null, h("th", { class: "corner" }, corner || ""), columns.map((name) => h("th", null, name)))),
    h("tbody", null, rows.map((name, i) =>
      h("tr", null, h("th", null, name), values[i].map((value) =>
        h("td", { style: shade(value), title: String(value) }, format ? format(value) : String(value)))))),
  );
}

/** Labelled horizontal bars for values in [0, 1]; each item may carry a `base` value too. */
export function bars(items, format) {
  return h("div", { class: "bars" }, items.map((item) => [
    h("div", { class: "bar-label" }, item.label),
    h("div", { class: "bar-track" },
      h("div", { class: "bar", style: { width: `${Math.max(0, Math.min(1, item.value)) * 100}%` } }),
      typeof item.base === "number"
        ? h("div", { class: "bar base", style: { width: `${Math.max(0, Math.min(1, item.base)) * 100}%` } })
        : null),
    h("div", { class: "bar-value num" }, format(item.value)),
  ]));
}

/**
 * A reliability diagram from a report's bins [{lower, upper, confidence, accuracy, count}]:
 * per non-empty bin, a bar as high as its accuracy (`bins`, calibrated) and a dot at its mean
 * confidence and accuracy (`before`, uncalibrated); on the diagonal, confidence means what it says.
 */
export function reliabilityDiagram({ bins, before, title }) {
  const size = 260;
  const margin = { top: 10, right: 10, bottom: 34, left: 40 };
  const plot = size - margin.left - margin.right;
  const x = (value) => margin.left + value * plot;
  const y = (value) => margin.top + (1 - value) * plot;
  const filled = bins.filter((bin) => bin.count > 0);
  const svg = h("svg:svg", {
    class: "chart reliability",
    viewBox: `0 0 ${size} ${size}`,
    role: "img",
    "aria-label": title,
    "data-bins": String(filled.length),
    style: { maxWidth: `${size * 1.4}px` },
  });
  for (const value of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(
      h("svg:line", { class: "grid-line", x1: x(0), x2: x(1), y1: y(value), y2: y(value) }),
      h("svg:text", { x: margin.left - 5, y: y(value) + 4, "text-anchor": "end" }, label(value)),
      h("svg:text", { x: x(value), y: size - margin.bottom + 14, "text-anchor": "middle" }, label(value)),
    );
  }
  for (const bin of filled) {
    svg.append(h("svg:rect", {
      class: "s0 reliability-bar", x: x(bin.lower) + 0.5, width: Math.max(1, x(bin.upper) - x(bin.lower) - 1),
      y: y(bin.accuracy), height: Math.max(0, y(0) - y(bin.accuracy)), "fill-opacity": 0.55,
    }, h("svg:title", null,
      `confidence ${label(bin.lower)}–${label(bin.upper)}: ${bin.count} images, ` +
      `mean confidence ${label(bin.confidence)}, accuracy ${label(bin.accuracy)}`)));
  }
  for (const bin of (before || []).filter((one) => one.count > 0)) {
    svg.append(h("svg:circle", { class: "s1", cx: x(bin.confidence), cy: y(bin.accuracy), r: 3 },
      h("svg:title", null, `before: ${bin.count} images, confidence ${label(bin.confidence)}, accuracy ${label(bin.accuracy)}`)));
  }
  svg.append(
    h("svg:line", { class: "axis", x1: x(0), y1: y(0), x2: x(1), y2: y(1), "stroke-dasharray": "4 3" }),
    h("svg:line", { class: "axis", x1: x(0), x2: x(0), y1: y(0), y2: y(1) }),
    h("svg:line", { class: "axis", x1: x(0), x2: x(1), y1: y(0), y2: y(0) }),
    h("svg:text", { x: x(0.5), y: size - 4, "text-anchor": "middle" }, "confidence"),
    h("svg:text", { x: 10, y: y(0.5), "text-anchor": "middle", transform: `rotate(-90 10 ${y(0.5)})` }, "accuracy"),
  );
  const legend = h("div", { class: "legend" },
    h("span", null, h("i", { class: "s0" }), "calibrated (bars)"),
    before ? h("span", null, h("i", { class: "s1" }), "before calibration (dots)") : null);
  return h("div", null, svg, legend);
}
