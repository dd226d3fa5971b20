// Jobs: the list with live status and progress, and the form that starts one.

import { fieldPath, get, post, sleep } from "../api.js";
import { badge, errorView, format, h, primaryMetric, replace } from "../dom.js";

const ACTIVE = new Set(["queued", "running"]);
const LIST_POLL_MS = 2000;

export async function render(view, { signal }) {
  const body = h("div");
  replace(view,
    h("h1", null, "Jobs", h("span", { class: "spacer" }), h("a", { class: "button", href: "#/jobs/new" }, "New job")),
    h("section", { class: "card" }, body));
  // The list refreshes while any job is queued or running; a finished list stays still.
  for (;;) {
    const page = await get("/jobs", { query: { limit: 100 }, signal });
    if (signal.aborted) return;
    replace(body, jobsTable(page));
    if (!page.items.some((job) => ACTIVE.has(job.status))) return;
    await sleep(LIST_POLL_MS, signal);
    if (signal.aborted) return;
  }
}

function jobsTable(page) {
  if (page.items.length === 0) {
    return h("p", { class: "muted" }, "No jobs yet. ", h("a", { href: "#/jobs/new" }, "Start one"), ".");
  }
  return h("table", { id: "job-table" },
    h("thead", null, h("tr", null, ["Job", "Status", "Progress", "Val", "Method", "Base model", "Created"]
      .map((name) => h("th", null, name)))),
    h("tbody", null, page.items.map((job) => {
      const [metricName, metricValue] = primaryMetric(job.metrics);
      const progress = job.progress || {};
      return h("tr", { "data-id": job.id },
        h("td", null, h("a", { href: `#/jobs/${job.id}` }, job.name), h("div", { class: "small muted" }, job.id)),
        h("td", null, badge(job.status)),
        h("td", null, h("div", { class: "meter" },
          h("progress", { max: 1, value: progress.fraction || 0 }),
          h("span", { class: "small" }, progress.epochs ? `epoch ${progress.epoch}/${progress.epochs}` : ""))),
        h("td", { class: "num", title: metricName || "" }, format.percent(metricValue)),
        h("td", null, job.hyperparameters.method || "—"),
        h("td", { class: "small" }, job.base_model),
        h("td", { class: "small" }, format.date(job.created_at)));
    })));
}

// ---- the new-job form, built from the API's own schema: its defaults, ranges and help ----

export async function renderNew(view, { query, signal }) {
  const [schema, datasets] = await Promise.all([
    get("/openapi.json", { signal }),
    get("/datasets", { query: { limit: 200 }, signal }),
  ]);
  const ready = datasets.items.filter((dataset) => dataset.status === "ready");
  if (ready.length === 0) {
    replace(view, h("h1", null, "New job"), h("div", { class: "notice" },
      "There is no ready dataset to train on yet. ", h("a", { href: "#/datasets" }, "Upload one first"), "."));
    return;
  }
  const fields = hyperparameterFields(schema);
  const datasetSelect = h("select", { name: "dataset_id", required: true },
    ready.map((dataset) => h("option", { value: dataset.id, selected: dataset.id === query.get("dataset") },
      `${dataset.name} — ${dataset.num_images} images, ${dataset.kind}`)));
  const controlSelect = h("select", { name: "control_dataset_id" },
    h("option", { value: "" }, "none"),
    ready.filter((dataset) => dataset.kind === "classification")
      .map((dataset) => h("option", { value: dataset.id }, dataset.name)));
  const baseModel = h("input", { name: "base_model", required: true, value: "tiny-clip", list: "base-models" });
  const nameInput = h("input", { name: "name", placeholder: "optional" });
  const status = h("div");
  const main = [
    field("dataset_id", "Dataset", datasetSelect, "The images to fine-tune on."),
    field("base_model", "Base model", baseModel,
      "tiny-clip (built in), a folder under CLIPFT_BASE_MODELS_DIR, or a hub id such as openai/clip-vit-base-patch32."),
    field("name", "Name", nameInput, "Shown in the lists."),
    field("control_dataset_id", "Control set", controlSelect,
      "A classification set the job does not train on: its zero-shot accuracy before and after shows what was forgotten."),
  ];
  const common = fields.filter((one) => one.common);
  const advanced = fields.filter((one) => !one.common);
  const form = h("form", { id: "job-form", novalidate: true },
    h("section", { class: "card" }, h("h2", null, "What to train"), h("div", { class: "form-grid" }, main)),
    h("section", { class: "card" }, h("h2", null, "Hyperparameters"),
      h("div", { class: "form-grid" }, common.map((one) => one.element)),
      h("details", null, h("summary", null, "More settings"),
        h("div", { class: "form-grid" }, advanced.map((one) => one.element)))),
    h("div", { class: "row" }, h("button", { type: "submit" }, "Start training"), status),
    h("datalist", { id: "base-models" }, h("option", { value: "tiny-clip" }),
      h("option", { value: "openai/clip-vit-base-patch32" })),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const element of form.querySelectorAll(".field")) markField(element, null);
    const hyperparameters = {};
    const problems = [];
    for (const one of fields) {
      try {
        const value = one.read();
        if (value !== undefined) hyperparameters[one.name] = value;
      } catch (error) {
        problems.push([one.element, error.message]);
      }
    }
    for (const [element, message] of problems) markField(element, message);
    if (problems.length) return;
    const body = { dataset_id: datasetSelect.value, base_model: baseModel.value.trim(), hyperparameters };
    if (nameInput.value.trim()) body.name = nameInput.value.trim();
    if (controlSelect.value) body.control_dataset_id = controlSelect.value;
    status.replaceChildren("Starting…");
    try {
      const job = await post("/jobs", { json: body });
      location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      // A 422 names its fields: show each message beside its input.
      for (const item of Array.isArray(error.body?.detail) ? error.body.detail : []) {
        const name = fieldPath(item.loc).split(".").pop();
        const element = form.querySelector(`.field[data-field="${CSS.escape(name)}"]`);
        if (element) markField(element, item.msg);
      }
      replace(status, errorView(error));
    }
  });
  replace(view, h("h1", null, "New job"), form);
}

const COMMON = new Set(["method", "epochs", "batch_size", "learning_rate", "augment", "freeze", "wise_ft_alphas"]);

function field(name, title, input, help) {
  return h("div", { class: "field", "data-field": name },
    h("label", null, title, input), help ? h("div", { class: "help" }, help) : null,
    h("div", { class: "error", hidden: true }));
}

function markField(element, message) {
  element.classList.toggle("invalid", Boolean(message));
  const slot = element.querySelector(".error");
  slot.hidden = !message;
  slot.textContent = message || "";
}

/** One input per hyperparameter of the API's schema, each knowing how to read its value. */
function hyperparameterFields(openapi) {
  const properties = openapi.components.schemas.Hyperparameters.properties;
  return Object.entries(properties).map(([name, spec]) => {
    const options = spec.anyOf ? spec.anyOf.filter((one) => one.type !== "null") : [spec];
    const type = options[0];
    const nullable = Boolean(spec.anyOf && spec.anyOf.some((one) => one.type === "null"));
    const control = inputFor(name, spec, type, nullable);
    const element = field(name, spec.title || name, control.input,
      [spec.description, rangeText(spec, type, nullable)].filter(Boolean).join(" "));
    return { name, element, common: COMMON.has(name), read: control.read };
  });
}

function rangeText(spec, type, nullable) {
  const bits = [];
  if (spec.default !== undefined && spec.default !== null) {
    bits.push(`Default ${Array.isArray(spec.default) ? spec.default.join(", ") || "none" : spec.default}.`);
  } else if (nullable) bits.push("Default: unset.");
  const low = type.minimum ?? type.exclusiveMinimum;
  const high = type.maximum ?? type.exclusiveMaximum;
  if (low !== undefined && high !== undefined) {
    bits.push(`Range ${type.exclusiveMinimum !== undefined ? "(" : "["}${low}, ${high}${type.exclusiveMaximum !== undefined ? ")" : "]"}.`);
  }
  return bits.join(" ");
}

function inputFor(name, spec, type, nullable) {
  if (type.enum) {
    const input = h("select", { name }, type.enum.map((value) => h("option", { value, selected: value === spec.default }, value)));
    return { input, read: () => input.value };
  }
  if (type.$ref) {
    // Literal types arrive as references to enums.
    return inputFor(name, spec, { enum: spec.enum || [] }, nullable);
  }
  if (type.type === "integer" || type.type === "number") {
    const input = h("input", {
      name, type: "number",
      step: type.type === "integer" ? "1" : "any",
      min: type.minimum, max: type.maximum,
      value: spec.default ?? "",
      placeholder: nullable ? "unset" : "",
    });
    return {
      input,
      read: () => {
        if (input.value.trim() === "") {
          if (nullable) return null;
          throw new Error("a value is needed");
        }
        const value = Number(input.value);
        if (!Number.isFinite(value)) throw new Error("not a number");
        if (type.type === "integer" && !Number.isInteger(value)) throw new Error("a whole number is needed");
        return value;
      },
    };
  }
  if (type.type === "array") {
    const numbers = type.items && type.items.type === "number";
    const input = h("textarea", {
      name, rows: 2,
      placeholder: numbers ? "comma-separated, e.g. 0.25, 0.5, 0.75" : "one per line",
      value: (spec.default || []).join(numbers ? ", " : "\n"),
    });
    return {
      input,
      read: () => {
        const parts = input.value.split(numbers ? /[,\s]+/ : /\n/).map((part) => part.trim()).filter(Boolean);
        if (parts.length === 0) return undefined; // the server's default
        if (!numbers) return parts;
        return parts.map((part) => {
          const value = Number(part);
          if (!Number.isFinite(value)) throw new Error(`${part} is not a number`);
          return value;
        });
      },
    };
  }
  const input = h("input", { name, value: spec.default ?? "" });
  return { input, read: () => input.value };
}
