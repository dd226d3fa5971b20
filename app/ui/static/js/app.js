// The dashboard's shell: the hash router, the API-key dialog, and one page at a time.

import { apiKey, get } from "./api.js";
import { errorView, h, replace } from "./dom.js";
import * as datasets from "./pages/datasets.js";
import * as job from "./pages/job.js";
import * as jobs from "./pages/jobs.js";
import * as models from "./pages/models.js";

const view = document.getElementById("view");
const routes = [
  [/^#\/datasets$/, datasets.render, "datasets"],
  [/^#\/jobs$/, jobs.render, "jobs"],
  [/^#\/jobs\/new$/, jobs.renderNew, "jobs"],
  [/^#\/jobs\/([\w-]+)$/, job.render, "jobs"],
  [/^#\/models$/, models.render, "models"],
  [/^#\/models\/([\w-]+)$/, models.renderTry, "models"],
];

let leaving = null; // aborts the current page's streams and timers when another opens

async function show() {
  const [path, queryText] = (location.hash || "#/jobs").split("?");
  const route = routes.find(([pattern]) => pattern.test(path));
  if (!route) {
    location.hash = "#/jobs";
    return;
  }
  leaving?.abort();
  leaving = new AbortController();
  const [pattern, render, section] = route;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.nav === section);
  }
  const params = path.match(pattern).slice(1);
  const query = new URLSearchParams(queryText || "");
  replace(view, h("p", { class: "muted" }, "Loading…"));
  try {
    await render(view, { params, query, signal: leaving.signal });
  } catch (error) {
    if (leaving.signal.aborted) return;
    replace(view, errorView(error));
  }
}

// The API-key dialog: opened by the button, or by any 401 answer.
const dialog = document.getElementById("key-dialog");
const form = document.getElementById("key-form");
const keyError = document.getElementById("key-error");

function askForKey(message) {
  keyError.hidden = !message;
  keyError.textContent = message || "";
  form.elements.key.value = apiKey.get();
  if (!dialog.open) dialog.showModal();
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const previous = apiKey.get();
  apiKey.set(form.elements.key.value);
  try {
    await get("/jobs", { query: { limit: 1 } });
  } catch (error) {
    if (error.status === 401) {
      if (previous) apiKey.set(previous);
      else apiKey.clear();
      keyError.hidden = false;
      keyError.textContent = `Not accepted: ${error.message}`;
      return;
    }
  }
  dialog.close();
  show();
});
document.getElementById("key-forget").addEventListener("click", () => {
  apiKey.clear();
  form.elements.key.value = "";
  dialog.close();
  show();
});
document.getElementById("key-button").addEventListener("click", () => askForKey());
window.addEventListener("clipft:unauthorized", () => {
  askForKey(apiKey.get() ? "The server did not accept the key you gave." : "");
});
window.addEventListener("hashchange", show);
show();
