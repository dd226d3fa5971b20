// Building elements without innerHTML: every string from the API becomes text, never markup.

// Set as properties (their live state), not attributes; everything else is an attribute.
const PROPERTIES = new Set(["value", "checked", "selected", "disabled", "hidden", "multiple",
  "required", "webkitdirectory", "maxLength"]);

export function h(tag, props, ...children) {
  const element = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2).toLowerCase(), value);
    else if (name === "class") element.setAttribute("class", value);
    else if (name === "style") Object.assign(element.style, value);
    else if (PROPERTIES.has(name)) element[name] = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

export function badge(status) {
  return h("span", { class: `badge ${status}`, "data-status": status }, status);
}

export const format = {
  date(text) {
    return text ? new Date(text).toLocaleString() : "—";
  },
  percent(value, digits = 1) {
    return typeof value === "number" ? `${(value * 100).toFixed(digits)}%` : "—";
  },
  number(value, digits = 3) {
    if (typeof value !== "number") return "—";
    return Number.isInteger(value) ? String(value) : value.toFixed(digits);
  },
  bytes(count) {
    const units = ["B", "KB", "MB", "GB"];
    let index = 0;
    while (count >= 1024 && index < units.length - 1) {
      count /= 1024;
      index += 1;
    }
    return `${count.toFixed(index ? 1 : 0)} ${units[index]}`;
  },
  seconds(value) {
    if (typeof value !== "number") return "—";
    if (value < 90) return `${Math.round(value)} s`;
    if (value < 5400) return `${Math.round(value / 60)} min`;
    return `${(value / 3600).toFixed(1)} h`;
  },
};

/** An error as the page shows it: the API's words, and its per-file list as a table. */
export function errorView(error) {
  const body = error && error.body;
  const rows = body && Array.isArray(body.errors) ? body.errors : null;
  return h(
    "div",
    { class: "notice bad", role: "alert" },
    h("div", null, error.message || String(error)),
    rows &&
      h(
        "div",
        null,
        h("p", { class: "small" }, `${body.files_refused} of ${body.files_checked} images could not be used` +
          (rows.length < body.files_refused ? ` (the first ${rows.length} are listed)` : "") + ":"),
        h(
          "table",
          { class: "file-errors" },
          h("thead", null, h("tr", null, h("th", null, "File"), h("th", null, "Why"))),
          h("tbody", null, rows.map((row) => h("tr", null, h("td", null, row.file), h("td", null, row.error)))),
        ),
      ),
  );
}

/** The primary metric a job's or model's metrics hold: accuracy, else mean recall@1. */
export function primaryMetric(metrics) {
  for (const name of ["val_accuracy", "val_mean_recall_at_1"]) {
    if (metrics && typeof metrics[name] === "number") return [name, metrics[name]];
  }
  return [null, null];
}
