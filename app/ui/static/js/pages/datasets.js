// Datasets: upload a zip or a folder (drag and drop or pickers), with progress; list and delete.

import { del, get, uploadResumable } from "../api.js";
import { badge, errorView, format, h, replace } from "../dom.js";
import { droppedFiles, zipFiles } from "../zip.js";

export async function render(view, { signal }) {
  const list = h("div");
  const uploader = uploadPanel(() => refresh(list, signal));
  replace(view, h("h1", null, "Datasets"), uploader, h("section", { class: "card" }, list));
  await refresh(list, signal);
}

async function refresh(list, signal) {
  const page = await get("/datasets", { query: { limit: 200 }, signal });
  if (page.items.length === 0) {
    replace(list, h("p", { class: "muted" }, "No datasets yet: upload one above."));
    return;
  }
  replace(
    list,
    h("h2", null, `${page.total} dataset${page.total === 1 ? "" : "s"}`),
    h("table", { id: "dataset-table" },
      h("thead", null, h("tr", null, ["Name", "Status", "Kind", "Images (train / val)", "Classes", "Created", ""]
        .map((name) => h("th", null, name)))),
      h("tbody", null, page.items.map((dataset) => datasetRow(dataset, () => refresh(list, signal))))),
  );
}

function datasetRow(dataset, refreshList) {
  const classes = dataset.classes.length
    ? `${dataset.classes.length}: ${dataset.classes.slice(0, 6).join(", ")}${dataset.classes.length > 6 ? ", …" : ""}`
    : "—";
  const remove = h("button", {
    class: "danger", type: "button",
    onclick: async () => {
      if (!confirm(`Delete dataset “${dataset.name}” and its images?`)) return;
      try {
        await del(`/datasets/${dataset.id}`);
        refreshList();
      } catch (error) {
        alert(error.message);
      }
    },
  }, "Delete");
  return h("tr", { "data-id": dataset.id },
    h("td", null, h("div", null, dataset.name), h("div", { class: "small muted" }, dataset.id)),
    h("td", null, badge(dataset.status)),
    h("td", null, dataset.kind),
    h("td", { class: "num" }, `${dataset.num_images} (${dataset.num_train} / ${dataset.num_val})`),
    h("td", { class: "small" }, classes),
    h("td", { class: "small" }, format.date(dataset.created_at)),
    h("td", null, h("div", { class: "row" },
      dataset.status === "ready" ? h("a", { class: "button", href: `#/jobs/new?dataset=${dataset.id}` }, "Train") : null,
      remove)),
  );
}

function uploadPanel(onUploaded) {
  const nameInput = h("input", { name: "name", placeholder: "optional; the zip's name by default", maxLength: 200 });
  const zipInput = h("input", { type: "file", accept: ".zip,application/zip", name: "zip", id: "zip-input" });
  const folderInput = h("input", { type: "file", name: "folder", id: "folder-input", webkitdirectory: true, multiple: true });
  const bar = h("progress", { max: 1, value: 0, hidden: true, id: "upload-progress" });
  const status = h("div", { id: "upload-status" });
  const drop = h("div", { class: "drop", id: "drop-zone" },
    h("div", null, "Drop a zip, or a folder of class folders, here"),
    h("div", { class: "small" }, "Class folders (",
      h("code", null, "cat/1.jpg"), "), or images with ", h("code", null, "metadata.csv"), " / ",
      h("code", null, "metadata.jsonl"), " for captions"));

  async function send(fileOrEntries, fallbackName) {
    status.replaceChildren();
    let file = fileOrEntries;
    if (Array.isArray(fileOrEntries)) {
      status.textContent = `Packing ${fileOrEntries.length} files…`;
      file = await zipFiles(fileOrEntries);
    }
    bar.hidden = false;
    bar.value = 0;
    status.textContent = `Uploading ${format.bytes(file.size)}…`;
    try {
      const target = { name: nameInput.value.trim(), filename: fallbackName };
      const dataset = await uploadResumable(file, target, (sent, total) => {
        bar.value = sent / total;
        status.textContent = sent < total
          ? `Uploading: ${format.bytes(sent)} of ${format.bytes(total)}`
          : "Checking the images…";
      });
      replace(status, h("div", { class: "notice", role: "status" },
        `“${dataset.name}” is ${dataset.status}: ${dataset.num_images} images`,
        dataset.classes.length ? `, ${dataset.classes.length} classes` : "", ". ",
        h("a", { href: `#/jobs/new?dataset=${dataset.id}` }, "Train a model on it")));
      nameInput.value = "";
      onUploaded();
    } catch (error) {
      replace(status, errorView(error));
    } finally {
      bar.hidden = true;
    }
  }

  zipInput.addEventListener("change", () => {
    if (zipInput.files.length) send(zipInput.files[0], zipInput.files[0].name);
    zipInput.value = "";
  });
  folderInput.addEventListener("change", () => {
    const files = [...folderInput.files].map((file) => ({ path: file.webkitRelativePath || file.name, file }));
    if (files.length) send(files, `${files[0].path.split("/")[0] || "folder"}.zip`);
    folderInput.value = "";
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const files = await droppedFiles(event.dataTransfer);
    if (files.length === 1 && files[0].path.toLowerCase().endsWith(".zip")) {
      send(files[0].file, files[0].path);
    } else if (files.length) {
      send(files, `${files[0].path.split("/")[0] || "dropped"}.zip`);
    }
  });

  return h("section", { class: "card" },
    h("h2", null, "Upload a dataset"),
    drop,
    h("div", { class: "row", style: { marginTop: "12px" } },
      h("label", null, "Zip file ", zipInput),
      h("label", null, "or a folder ", folderInput),
      h("label", { class: "spacer" }, "Name ", nameInput)),
    h("div", { style: { marginTop: "10px" } }, bar, status));
}
