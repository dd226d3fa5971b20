// Models: the list, and a try-it panel: drop images to see the top labels, or type texts to
// see how well each image matches each text.

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
        h("tbody", null, rows))));
}

export async function renderTry(view, { params, signal }) {
  const [modelId] = params;
  const model = await get(`/models/${modelId}`, { signal });
  const [metricName, metricValue] = primaryMetric(model.metrics);
  const results = h("div", { id: "try-results" });
  const picker = h("input", { type: "file", accept: "image/*", multiple: true, id: "try-files" });
  const topK = h("select", { name: "top_k" }, [1, 3, 5, 10].map((k) => h("option", { value: k, selected: k === 5 }, `top ${k}`)));
  const texts = h("textarea", { id: "try-texts", placeholder: "Optional: texts to compare with, one per line (e.g. a photo of a red circle)" });
  const drop = h("div", { class: "drop", id: "try-drop" }, "Drop images here, or pick them: ", picker);
  const compare = h("button", { type: "button", id: "try-compare" }, "Compare with the texts");
  let images = [];

  async function run() {
    if (images.length === 0) return;
    const lines = texts.value.split("\n").map((line) => line.trim()).filter(Boolean);
    const form = new FormData();
    form.append("model_id", model.id);
    for (const file of images) form.append("files", file, file.name);
    if (lines.length) for (const line of lines) form.append("texts", line);
    else form.append("top_k", topK.value);
    replace(results, h("p", { class: "muted" }, "Asking the model…"));
    try {
      const answer = await post("/predict", { form });
      replace(results, answer.predictions ? labelsView(images, answer) : similarityView(images, lines, answer));
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
  compare.addEventListener("click", run);
  topK.addEventListener("change", run);

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
      h("h2", null, "Try it"), drop,
      h("div", { class: "row", style: { marginTop: "10px" } }, model.kind === "classification" ? topK : null),
      h("div", { style: { marginTop: "10px" } }, texts),
      h("div", { class: "row", style: { marginTop: "8px" } }, compare,
        h("span", { class: "small muted" }, model.kind === "classification"
          ? "Without texts the images are classified over the model's labels."
          : "This model was trained on captions: type texts to compare the images with.")),
      h("div", { style: { marginTop: "16px" } }, results)));
}

function stat(label, value) {
  return h("div", { class: "stat" }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
}

function thumb(file) {
  const url = URL.createObjectURL(file);
  return h("img", { src: url, alt: file.name, onload: () => URL.revokeObjectURL(url) });
}

function labelsView(images, answer) {
  return h("div", { class: "thumbs" }, images.map((file, index) => h("div", { class: "thumb", "data-image": file.name },
    thumb(file), h("div", { class: "name" }, file.name),
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
