// The sample browser: a table of every record (filters, full-text search, 100 rows a
// page) and, for a clicked record, its lineage, verdicts, fields and highlighted spans.
// Data arrives through evoforgeLoad(part, number, items): inline, or from sidecar
// report-data/*.js files added as <script> tags (file:// pages may not fetch).
var EF = { rowChunks: [], rows: [], details: {}, docs: {}, waiting: {}, added: {},
           cfg: null, shown: [], page: 0, perPage: 100 };
var COLS = ["id", "output", "step", "operator", "reason", "kind"];

function evoforgeLoad(part, n, items) {
  if (part === "rows") { EF.rowChunks[n] = items; }
  else if (part === "details") { EF.details[n] = items; }
  else if (part === "doc") { EF.docs[n] = items; }
  var key = part + ":" + n;
  (EF.waiting[key] || []).forEach(function (done) { done(); });
  delete EF.waiting[key];
}

function efNeed(part, n, done) {
  var have = part === "doc" ? EF.docs[n] !== undefined
           : part === "details" ? EF.details[n] !== undefined : EF.rowChunks[n] !== undefined;
  if (have) { done(); return; }
  var key = part + ":" + n;
  (EF.waiting[key] = EF.waiting[key] || []).push(done);
  if (EF.added[key]) { return; }
  EF.added[key] = true;
  var tag = document.createElement("script");
  tag.src = "report-data/" + part + "-" + String(n).padStart(4, "0") + ".js";
  tag.onerror = function () {
    document.getElementById("sb-status").textContent = "could not load " + tag.src;
  };
  document.head.appendChild(tag);
}

function evoforgeStart(cfg) {
  EF.cfg = cfg;
  var pending = Math.max(1, cfg.chunks);
  var ready = function () {
    if (--pending > 0) { return; }
    EF.rowChunks.forEach(function (chunk) { EF.rows = EF.rows.concat(chunk); });
    efFillFilters();
    efApply();
    document.body.setAttribute("data-samples", String(EF.rows.length));
  };
  if (!cfg.chunks) { ready(); return; }
  // Inlined chunks are here already; sidecar ones come through <script> tags.
  for (var i = 0; i < cfg.chunks; i++) { efNeed("rows", i, ready); }
}

function efFillFilters() {
  COLS.slice(1).forEach(function (col, k) {
    var counts = {};
    EF.rows.forEach(function (r) { counts[r[k + 1]] = (counts[r[k + 1]] || 0) + 1; });
    var select = document.getElementById("sb-" + col);
    Object.keys(counts).sort().forEach(function (value) {
      var option = document.createElement("option");
      option.value = value;
      option.textContent = value + " (" + counts[value] + ")";
      select.appendChild(option);
    });
    select.addEventListener("change", function () { efApply(); });
  });
  var timer = null;
  document.getElementById("sb-search").addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(efApply, 150);
  });
  document.getElementById("sb-prev").addEventListener("click", function () { efPage(-1); });
  document.getElementById("sb-next").addEventListener("click", function () { efPage(1); });
}

function efApply() {
  var wanted = COLS.slice(1).map(function (col) {
    return document.getElementById("sb-" + col).value;
  });
  var words = document.getElementById("sb-search").value.toLowerCase().split(/\s+/)
    .filter(function (w) { return w; });
  EF.shown = [];
  for (var i = 0; i < EF.rows.length; i++) {
    var row = EF.rows[i], ok = true;
    for (var k = 0; k < wanted.length && ok; k++) {
      if (wanted[k] && row[k + 1] !== wanted[k]) { ok = false; }
    }
    for (var w = 0; w < words.length && ok; w++) {
      if (row[7].indexOf(words[w]) < 0) { ok = false; }
    }
    if (ok) { EF.shown.push(i); }
  }
  EF.page = 0;
  efRender();
}

function efPage(step) {
  var last = Math.max(0, Math.ceil(EF.shown.length / EF.perPage) - 1);
  EF.page = Math.min(last, Math.max(0, EF.page + step));
  efRender();
}

function efRender() {
  var body = document.querySelector("#sb-table tbody");
  body.textContent = "";
  var start = EF.page * EF.perPage;
  EF.shown.slice(start, start + EF.perPage).forEach(function (i) {
    var row = EF.rows[i], tr = document.createElement("tr");
    tr.setAttribute("data-row", String(i));
    if (row[4] !== "kept") { tr.className = "rejected"; }
    row.slice(0, 7).forEach(function (value) { efCell(tr, "td", value); });
    tr.addEventListener("click", function () { efOpen(i); });
    body.appendChild(tr);
  });
  var pages = Math.max(1, Math.ceil(EF.shown.length / EF.perPage));
  document.getElementById("sb-status").textContent = EF.shown.length + " of " +
    EF.rows.length + " records; page " + (EF.page + 1) + " of " + pages;
}

function efCell(tr, tag, text) {
  var cell = document.createElement(tag);
  cell.textContent = text === null || text === undefined ? "" : String(text);
  tr.appendChild(cell);
  return cell;
}

function efEl(parent, tag, text, cls) {
  var el = document.createElement(tag);
  if (text !== undefined && text !== null) { el.textContent = String(text); }
  if (cls) { el.className = cls; }
  parent.appendChild(el);
  return el;
}

function efOpen(i) {
  var n = Math.floor(i / EF.cfg.chunk);
  efNeed("details", n, function () { efShow(i, EF.details[n][i % EF.cfg.chunk]); });
}

function efShow(i, d) {
  var box = document.getElementById("sb-detail");
  box.textContent = "";
  box.setAttribute("data-id", d.id);
  box.setAttribute("data-row", String(i));
  efEl(box, "h3", d.id);
  var status = d.status + " (" + d.output + (d.stage !== d.output ? " \u2192 " + d.stage : "") + ")";
  if (d.reject) {
    status += ": " + d.reject.reason + (d.reject.detail ? " \u2014 " + d.reject.detail : "");
    if (d.reject.lost_to) { status += " (lost to " + d.reject.lost_to + ")"; }
  }
  efEl(box, "p", status, "sb-status-" + d.status);
  if (d.parent) {
    var p = efEl(box, "p", "parent: ");
    if (d.parent_row !== null && d.parent_row !== undefined) {
      var a = efEl(p, "a", d.parent);
      a.href = "#samples";
      a.addEventListener("click", function () { efOpen(d.parent_row); });
    } else { efEl(p, "span", d.parent + " (not in this folder)"); }
  }
  var fields = {};
  d.fields.forEach(function (f) { fields[f[0]] = f[1]; });
  efEl(box, "h4", "Lineage");
  var ol = efEl(box, "ol", null, "sb-lineage");
  d.lineage.forEach(function (step) {
    var li = efEl(ol, "li");
    efEl(li, "b", step.label);
    var bits = [];
    if (step.round !== undefined && step.round !== null) { bits.push("round " + step.round); }
    if (step.prompt_id) { bits.push("prompt " + step.prompt_id); }
    if (step.model) { bits.push("model " + step.model); }
    if (bits.length) { efEl(li, "span", " " + bits.join(" \u00b7 "), "sb-meta"); }
    var text = step.field ? fields[step.field] : step.text;
    if (text) { efEl(li, "div", text, "sb-text"); }
  });
  if (d.verdicts.length) {
    efEl(box, "h4", "Verdicts");
    var vt = efEl(box, "table", null, "sb-verdicts");
    d.verdicts.forEach(function (v) {
      var tr = efEl(vt, "tr");
      efCell(tr, "th", v[0]);
      efCell(tr, "td", v[1]);
      if (v.length > 2) { efCell(tr, "td", v[2]).className = "sb-text sb-reason"; }
    });
  }
  d.marks.forEach(function (mark) { efMarks(box, mark); });
  efEl(box, "h4", "Fields");
  var ft = efEl(box, "table", null, "sb-fields");
  d.fields.forEach(function (f) {
    var tr = efEl(ft, "tr");
    efCell(tr, "th", f[0]);
    efCell(tr, "td", f[1]).className = "sb-text";
  });
  efEl(box, "h4", "meta");
  var meta = d.meta;
  try { meta = JSON.stringify(JSON.parse(meta), null, 1); } catch (e) { /* cut short */ }
  efEl(box, "pre", meta);
  box.scrollIntoView();
}

function efMarks(box, mark) {
  efEl(box, "h4", mark.title);
  if (mark.redacted) { efEl(box, "p", "Source texts left out (report --redact).", "note"); return; }
  var holder = efEl(box, "div", null, "sb-source");
  var draw = function (text) {
    var spans = mark.spans.slice().sort(function (a, b) { return a[0] - b[0]; });
    var from = Math.max(0, spans.length ? spans[0][0] - 1500 : 0);
    var to = Math.min(text.length, spans.length ? spans[spans.length - 1][1] + 1500 : 3000);
    var at = from;
    if (from > 0) { efEl(holder, "span", "\u2026"); }
    spans.forEach(function (s) {
      if (s[0] < at) { return; }
      efEl(holder, "span", text.slice(at, s[0]));
      efEl(holder, "mark", text.slice(s[0], s[1]));
      at = s[1];
    });
    efEl(holder, "span", text.slice(at, to));
    if (to < text.length) { efEl(holder, "span", "\u2026"); }
  };
  if (mark.text !== undefined) { draw(mark.text); return; }
  if (mark.doc_no !== undefined) {
    efNeed("doc", mark.doc_no, function () { draw(EF.docs[mark.doc_no]); });
    return;
  }
  efEl(holder, "p", "Source document not available; the contexts as stored:", "note");
  (mark.contexts || []).forEach(function (c) { efEl(holder, "mark", c); efEl(holder, "br"); });
}
