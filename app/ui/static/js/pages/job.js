// One job: live progress, the loss and val-metric curves, events, the report; cancel and retry.

import { del, follow, get, post } from "../api.js";
import { badge, format, h, primaryMetric, replace } from "../dom.js";
import { bars, lineChart, matrixTable, reliabilityDiagram } from "../charts.js";

const ACTIVE = new Set(["queued", "running"]);

export async function render(view, { params, signal }) {
  const [jobId] = params;
  const state = { job: await get(`/jobs/${jobId}`, { signal }), events: [], report: null, loss: [] };
  state.loss = [...state.job.loss_curve];
  const sections = {
    head: h("div"), stats: h("section", { class: "card" }), charts: h("div", { class: "grid" }),
    report: h("div"), events: h("section", { class: "card" }),
  };
  replace(view, sections.head, sections.stats, sections.charts, sections.report, sections.events);
  const draw = () => drawAll(sections, state, jobId, refresh);

  async function refresh() {
    state.job = await get(`/jobs/${jobId}`, { signal });
    if (state.job.status === "succeeded" && !state.report) {
      state.report = await get(`/jobs/${jobId}/report`, { signal }).catch(() => null);
    }
    draw();
  }

  await refresh();
  // Every event from the first, then live: the stream ends once the job has finished.
  await follow(`/jobs/${jobId}/events/stream`, (message) => {
    if (message.event === "job_event") {
      state.events.push(message.data);
      if (message.data.type === "status" || message.data.type === "retry") refresh();
    } else if (message.event === "progress") {
      Object.assign(state.job, { status: message.data.status, progress: message.data.progress,
        metrics: message.data.metrics });
      addLossPoint(state.loss, message.data.progress?.step, message.data.metrics?.train_loss);
    } else if (message.event === "end") {
      refresh();
      return;
    }
    draw();
  }, signal);
}

function addLossPoint(points, step, loss) {
  if (typeof step !== "number" || typeof loss !== "number") return;
  while (points.length && points[points.length - 1][0] >= step) points.pop();
  points.push([step, loss]);
}

function drawAll(sections, state, jobId, refresh) {
  const { job } = state;
  replace(sections.head, header(job, refresh));
  replace(sections.stats, stats(job));
  replace(sections.charts,
    h("section", { class: "card", id: "loss-chart" }, h("h2", null, "Training loss"),
      lineChart({ series: [{ name: "train loss", points: state.loss }], xLabel: "step", yLabel: "loss", title: "loss" })),
    h("section", { class: "card", id: "metric-chart" }, h("h2", null, "Validation"),
      lineChart({ series: metricSeries(state.events), xLabel: "epoch (0 = base model)", yLabel: "val metric",
        yRange: [0, 1], title: "evaluation" })));
  replace(sections.report, state.report ? reportView(state.report) : null);
  replace(sections.events, h("h2", null, "Events"), eventsTable(state.events));
}

function header(job, refresh) {
  const act = (label, action, className) => h("button", {
    type: "button", class: className || "quiet",
    onclick: async (event) => {
      event.target.disabled = true;
      try {
        await action();
        await refresh();
      } catch (error) {
        alert(error.message);
      } finally {
        event.target.disabled = false;
      }
    },
  }, label);
  return h("div", null,
    h("p", { class: "small" }, h("a", { href: "#/jobs" }, "← Jobs")),
    h("h1", null, job.name, badge(job.status), h("span", { class: "spacer" }),
      job.model_id ? h("a", { class: "button", href: `#/models/${job.model_id}` }, "Try the model") : null,
      ACTIVE.has(job.status) && !job.cancel_requested
        ? act("Cancel", async () => {
          if (confirm(`Cancel job “${job.name}”? It stops at its next progress point.`)) {
            await post(`/jobs/${job.id}/cancel`);
          }
        }, "danger") : null,
      job.status === "failed" || job.status === "cancelled"
        ? act("Retry", () => post(`/jobs/${job.id}/retry`)) : null,
      !ACTIVE.has(job.status)
        ? act("Delete", async () => {
          if (!confirm(`Delete job “${job.name}”${job.model_id ? " and its model" : ""}?`)) return;
          await del(`/jobs/${job.id}`);
          location.hash = "#/jobs";
        }, "danger") : null),
    job.error ? h("div", { class: "notice bad", role: "alert" }, job.error) : null);
}

function stats(job) {
  const progress = job.progress || {};
  const [metricName, metricValue] = primaryMetric(job.metrics);
  const stat = (label, value, id) => h("div", { class: "stat", id },
    h("div", { class: "value" }, value), h("div", { class: "label" }, label));
  return [
    h("div", { class: "meter", style: { marginBottom: "12px" } },
      h("progress", { id: "job-progress", max: 1, value: progress.fraction || 0 }),
      h("span", null, format.percent(progress.fraction || 0, 0))),
    h("div", { class: "stats" },
      stat("epoch", progress.epochs ? `${progress.epoch} / ${progress.epochs}` : "—"),
      stat("step", progress.total_steps ? `${progress.step} / ${progress.total_steps}` : "—"),
      stat("images / s", format.number(progress.samples_per_second, 0)),
      stat("time left", ACTIVE.has(job.status) ? format.seconds(progress.eta_seconds) : "—"),
      stat(metricName ? metricName.replace(/_/g, " ") : "val metric", format.percent(metricValue), "job-metric"),
      stat("train loss", format.number(job.metrics?.train_loss)),
      stat("attempt", `${job.attempt} of ${job.max_attempts}`)),
    h("p", { class: "small muted" },
      `${job.hyperparameters.method} · ${job.base_model} · dataset ${job.dataset_id} · created ${format.date(job.created_at)}`),
  ];
}

/** Val metrics by epoch, from the job's evaluation events (epoch 0 is the base model). */
function metricSeries(events) {
  const byName = new Map();
  for (const event of events) {
    if (event.type !== "evaluation") continue;
    for (const [name, value] of Object.entries(event.data)) {
      if (name === "epoch" || typeof value !== "number") continue;
      if (!/accuracy|recall_at_1$/.test(name)) continue;
      if (!byName.has(name)) byName.set(name, []);
      const points = byName.get(name);
      // A resumed attempt evaluates an epoch again: keep the newest value.
      const index = points.findIndex((point) => point[0] === event.data.epoch);
      if (index >= 0) points[index] = [event.data.epoch, value];
      else points.push([event.data.epoch, value]);
    }
  }
  return [...byName].map(([name, points]) => ({
    name: name.replace(/^val_/, "").replace(/_/g, " "),
    points: points.sort((a, b) => a[0] - b[0]),
  }));
}

function eventsTable(events) {
  if (events.length === 0) return h("p", { class: "muted" }, "No events yet.");
  return h("div", { class: "events" }, h("table", { id: "event-table" },
    h("thead", null, h("tr", null, h("th", null, "Time"), h("th", null, "Type"), h("th", null, "What happened"))),
    h("tbody", null, [...events].reverse().map((event) => h("tr", null,
      h("td", { class: "small" }, format.date(event.created_at)),
      h("td", null, event.type), h("td", null, event.message))))));
}

function reportView(report) {
  const metric = report.primary_metric;
  const base = report.base?.metrics?.[metric];
  const tuned = report.fine_tuned?.metrics?.[metric];
  const cards = [
    h("section", { class: "card", id: "report-summary" }, h("h2", null, "Report"),
      h("div", { class: "stats" },
        statBlock(`base model, ${metric.replace(/_/g, " ")}`, format.percent(base)),
        statBlock("fine-tuned", format.percent(tuned)),
        statBlock("gain", typeof report.gain === "number" ? `${report.gain >= 0 ? "+" : ""}${(report.gain * 100).toFixed(1)} pts` : "—"),
        statBlock("epochs trained", String(report.epochs_trained)),
        report.fine_tuned?.wise_ft_alpha != null ? statBlock("WiSE-FT α", String(report.fine_tuned.wise_ft_alpha)) : null),
      report.stopped_early ? h("p", { class: "small muted" }, `Stopped early: ${report.stopped_early}`) : null,
      report.retention ? h("p", null,
        `Control set (zero-shot accuracy): ${format.percent(report.retention.zero_shot_accuracy_before)} before, `,
        `${format.percent(report.retention.zero_shot_accuracy_after)} after `,
        `(${report.retention.change >= 0 ? "+" : ""}${(report.retention.change * 100).toFixed(1)} pts).`) : null),
  ];
  const perClass = report.fine_tuned?.per_class_accuracy;
  if (perClass) {
    const basePerClass = report.base?.per_class_accuracy || {};
    cards.push(h("section", { class: "card", id: "per-class" }, h("h2", null, "Accuracy per class"),
      h("p", { class: "small muted" }, "Blue: fine-tuned; grey: the base model."),
      bars(Object.entries(perClass).map(([label, value]) => ({ label, value: value ?? 0, base: basePerClass[label] })),
        (value) => format.percent(value, 0))));
  }
  const confusion = report.fine_tuned?.confusion_matrix;
  if (confusion) {
    cards.push(h("section", { class: "card", id: "confusion" }, h("h2", null, "Confusion matrix"),
      h("p", { class: "small muted" }, "Rows: the true class; columns: the predicted one (val split)."),
      h("div", { style: { overflowX: "auto" } },
        matrixTable({ rows: report.classes, columns: report.classes, values: confusion, corner: "true \\ predicted" }))));
  }
  if (report.wise_ft && report.wise_ft.length) {
    cards.push(h("section", { class: "card", id: "wise-ft" }, h("h2", null, "WiSE-FT: mixing base and fine-tuned weights"),
      lineChart({
        series: [
          { name: metric.replace(/^val_/, "val ").replace(/_/g, " "), points: report.wise_ft.map((row) => [row.alpha, row[metric]]) },
          { name: "control zero-shot accuracy", points: report.wise_ft.filter((row) => typeof row.control_zero_shot_accuracy === "number")
            .map((row) => [row.alpha, row.control_zero_shot_accuracy]) },
        ],
        xLabel: "α (0 = base, 1 = fine-tuned)", yLabel: "score", yRange: [0, 1], title: "WiSE-FT curve",
      })));
  }
  if (report.calibration) cards.push(calibrationView(report.calibration));
  return h("div", { class: "grid", style: { marginBottom: "18px" } }, cards);
}

function calibrationView(calibration) {
  const threshold = calibration.min_confidence;
  return h("section", { class: "card", id: "calibration" }, h("h2", null, "Calibration"),
    h("p", { class: "small muted" }, calibration.fitted === false
      ? `Val split (${calibration.num_images} images): ${calibration.note}.`
      : `Temperature ${format.number(calibration.temperature, 2)} fitted on the val split ` +
        `(${calibration.num_images} images); /predict answers the calibrated probabilities.`),
    h("div", { class: "stats" },
      statBlock("ECE before", format.percent(calibration.ece_before)),
      statBlock("ECE after", format.percent(calibration.ece_after)),
      threshold != null ? statBlock("default min_confidence", format.number(threshold, 3)) : null),
    calibration.target_precision != null ? h("p", { class: "small" },
      calibration.target_reached
        ? `Below ${format.number(threshold, 3)} the model answers “below threshold”: on val, that keeps ` +
          `the answers right at least ${format.percent(calibration.target_precision)} of the time.`
        : `No threshold reached the target precision of ${format.percent(calibration.target_precision)} ` +
          "on val: the model abstains on everything but certainties.") : null,
    reliabilityDiagram({ bins: calibration.bins_after, before: calibration.bins_before, title: "Reliability diagram" }),
    h("table", { class: "coverage" },
      h("thead", null, h("tr", null, ["min confidence", "coverage", "accuracy", "images"].map((name) => h("th", null, name)))),
      h("tbody", null, calibration.coverage.map((row) => h("tr", null,
        h("td", { class: "num" }, format.number(row.min_confidence, 3)),
        h("td", { class: "num" }, format.percent(row.coverage)),
        h("td", { class: "num" }, format.percent(row.accuracy)),
        h("td", { class: "num" }, String(row.count)))))));
}

function statBlock(label, value) {
  return h("div", { class: "stat" }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
}
