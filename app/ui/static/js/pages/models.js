// Models: the list, a try-it panel per model (drop images to see the top labels, or type texts
// to see how well each image matches each text) and zero-shot with any base model.

import { fetchBlob, get, post } from "../api.js";
import { errorView, format, h, primaryMetric, replace } from "../dom.js";
import { bars, matrixTable } from "../charts.js";

export async function render(view, { signal }) {
  const page = await get("/models", { query: { limit: 200 }, signal });
  const rows = page.items.map((model) => {
    const [metricName, metricValue] = primaryMetric(model.metrics);
    return h("tr", { "data-id": model.id },
      h("td", null, h("a", { href: `#/models/${model.id}` }, model.name), h("div", { class: "small muted" }, model.id)),
      h("td", null, model.kind),
      h("td", { class: "small" }, model.labels.length ? `${model.labels.length}: ${model.labels.slice(0, 5).join(", ")}${model.labels.length > 5 ? ", …" : ""}` : "—"),
      h("td", { class: "num", title: metricName || "" }, format.percent(metricValue)),
      h("td", { class: "small" }, model.base_model),
      h("td", null, h("a", { href: `#/jobs/${model.job_id}` }, "job")),
      h("td", { class: "small" }, format.date(model.created_at)),
      h("td", null, h("a", { class: "button", href: `#/models/${model.id}` }, "Try it")));
  });
  replace(view, h("h1", null, "Models"), h("section", { class: "card" },
    page.items.length === 0
      ? h("p", { class: "muted" }, "No models yet: a job that succeeds registers one. ", h("a", { href: "#/jobs/new" }, "Start a job"), ".")
      : h("table", { id: "model-table" },
        h("thead", null, h("tr", null, ["Model", "Kind", "Labels", "Val", "Base model", "From", "Created", ""]
          .map((name) => h("th", null, name)))),
        h("tbody", null, rows))),
    zeroShotCard());
}

export async function renderTry(view, { params, signal }) {
  const [modelId] = params;
  const model = await get(`/models/${modelId}`, { signal });
  const [metricName, metricValue] = primaryMetric(model.metrics);
  const texts = h("textarea", { id: "try-texts", placeholder: "Optional: texts to compare with, one per line (e.g. a photo of a red circle)" });
  const panel = imagePanel("try", (form) => {
    form.append("model_id", model.id);
    return lines(texts);
  }, model.kind === "classification");
  const compare = h("button", { type: "button", id: "try-compare", onclick: panel.run }, "Compare with the texts");
  replace(view,
    h("p", { class: "small" }, h("a", { href: "#/models" }, "← Models")),
    h("h1", null, model.name, h("span", { class: "spacer" }),
      h("button", { type: "button", class: "quiet", onclick: () => download(model) }, "Download (zip)")),
    h("section", { class: "card" },
      h("div", { class: "stats" },
        stat("kind", model.kind), stat(metricName ? metricName.replace(/_/g, " ") : "val", format.percent(metricValue)),
        stat("labels", String(model.labels.length)), stat("base model", model.base_model)),
      h("p", { class: "small muted" }, model.labels.join(" · "))),
    h("section", { class: "card", id: "try-it" },
      h("h2", null, "Try it"), panel.drop, panel.options,
      h("div", { style: { marginTop: "10px" } }, texts),
      h("div", { class: "row", style: { marginTop: "8px" } }, compare,
        h("span", { class: "small muted" }, model.kind === "classification"
          ? "Without texts the images are classified over the model's labels."
          : "This model was trained on captions: type texts to compare the images with.")),
      panel.results));
}

/** The zero-shot card: any base model classifies over labels typed here, no training. */
function zeroShotCard() {
  const baseModel = h("input", { name: "base_model", value: "tiny-clip", list: "zero-shot-models", required: true });
  const labels = h("textarea", { id: "zero-shot-labels", rows: 3, placeholder: "one label per line, e.g.\ncat\ndog" });
  const template = h("input", { name: "prompt_template", placeholder: "a photo of a {}." });
  const panel = imagePanel("zero-shot", (form) => {
    const names = lines(labels);
    if (names.length === 0) throw new Error("type the labels to choose from, one per line");
    form.append("base_model", baseModel.value.trim());
    for (const name of names) form.append("labels", name);
    if (template.value.trim()) form.append("prompt_templates", template.value.trim());
    return [];
  }, true);
  return h("section", { class: "card", id: "zero-shot" },
    h("h2", null, "Zero-shot: a base model, no training"),
    h("p", { class: "small muted" },
      "What a base model makes of your images before any fine-tuning: the baseline a job should beat."),
    h("div", { class: "form-grid" },
      h("label", null, "Base model", baseModel),
      h("label", null, "Prompt template (optional)", template)),
    h("datalist", { id: "zero-shot-models" }, h("option", { value: "tiny-clip" }),
      h("option", { value: "openai/clip-vit-base-patch32" })),
    h("label", { style: { marginTop: "10px" } }, "Labels", labels),
    h("div", { style: { marginTop: "10px" } }, panel.drop), panel.options,
    h("div", { class: "row", style: { marginTop: "8px" } },
      h("button", { type: "button", id: "zero-shot-run", onclick: panel.run }, "Classify")),
    panel.results);
}

function lines(textarea) {
  return textarea.value.split("\n").map((line) => line.trim()).filter(Boolean);
}

/**
 * Images dropped or picked, sent to /predict with the fields `fill(form)` adds; `fill`
 * returns the texts to compare with (none: classify, top-k). Results show below.
 */
function imagePanel(id, fill, classifies) {
  const picker = h("input", { type: "file", accept: "image/*", multiple: true, id: `${id}-files` });
  const drop = h("div", { class: "drop", id: `${id}-drop` }, "Drop images here, or pick them: ", picker);
  const topK = h("select", { name: "top_k" }, [1, 3, 5, 10].map((k) => h("option", { value: k, selected: k === 5 }, `top ${k}`)));
  const results = h("div", { id: `${id}-results`, style: { marginTop: "16px" } });
  let images = [];

  async function run() {
    if (images.length === 0) {
      replace(results, h("p", { class: "muted" }, "Drop or pick some images first."));
      return;
    }
    const form = new FormData();
    for (const file of images) form.append("files", file, file.name);
    let texts;
    try {
      texts = fill(form);
    } catch (error) {
      replace(results, errorView(error));
      return;
    }
    if (texts.length) for (const text of texts) form.append("texts", text);
    else form.append("top_k", topK.value);
    replace(results, h("p", { class: "muted" }, "Asking the model…"));
    try {
      const answer = await post("/predict", { form });
      replace(results, answer.predictions ? labelsView(images, answer) : similarityView(images, texts, answer));
    } catch (error) {
      replace(results, errorView(error));
    }
  }

  function choose(files) {
    images = [...files].filter((file) => file.type.startsWith("image/") || /\.(png|jpe?g|webp|gif|bmp|tiff?)$/i.test(file.name));
    run();
  }
  picker.addEventListener("change", () => choose(picker.files));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    choose(event.dataTransfer.files);
  });
  topK.addEventListener("change", run);
  const options = h("div", { class: "row", style: { marginTop: "10px" } }, classifies ? topK : null);
  return { drop, options, results, run };
}

function stat(label, value) {
  return h("div", { class: "stat" }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
}

function thumb(file) {
  const url = URL.createObjectURL(file);
  return h("img", { src: url, alt: file.name, onload: () => URL.revokeObjectURL(url) });
}

function labelsView(images, answer) {
  const decisions = answer.decisions || [];
  return h("div", { class: "thumbs" }, images.map((file, index) => h("div", { class: "thumb", "data-image": file.name },
    thumb(file), h("div", { class: "name" }, file.name),
    decisions[index] && decisions[index].label === null
      ? h("div", { class: "small muted abstained" }, `No label: ${decisions[index].reason} (${format.percent(answer.min_confidence)})`)
      : null,
    bars(answer.predictions[index].map((item) => ({ label: item.label, value: item.score })),
      (value) => format.percent(value)))));
}

function similarityView(images, lines, answer) {
  return h("div", null,
    h("div", { class: "thumbs" }, images.map((file) => h("div", { class: "thumb" }, thumb(file), h("div", { class: "name" }, file.name)))),
    h("h2", { style: { marginTop: "16px" } }, "Which text fits each image"),
    h("p", { class: "small muted" }, "Each row: the image's probabilities over the texts (softmax of the model's scaled cosine similarities)."),
    h("div", { style: { overflowX: "auto" } }, h("div", { id: "similarity" },
      matrixTable({ rows: images.map((file) => file.name), columns: lines, values: answer.probabilities,
        corner: "image \\ text", scale: 1, format: (value) => format.percent(value, 0) }))));
}

async function download(model) {
  // A plain link would not carry the API key: fetch the zip, then hand it to the browser.
  try {
    const url = URL.createObjectURL(await fetchBlob(`/models/${model.id}/download`));
    const link = h("a", { href: url, download: `${model.name.replace(/[^\w.-]+/g, "_") || model.id}.zip` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (error) {
    alert(error.message);
  }
}
