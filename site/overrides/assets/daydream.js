/* daydream report site: charts, sortable and filterable tables (the filter lives in the URL),
   CSV of the rows shown, search over the embedded index, previous/next within a filtered view.
   Offline and dependency-free; works from file:// (no workers, no fetch). Text from data is
   always put in the page with textContent, never as HTML. */
(function () {
  "use strict";

  // ---- charts ------------------------------------------------------------------------------
  // Each chart is <div class="dd-chart" data-figure="ID"> plus <script type="application/json" id="ID">.
  // A trace may carry customdata hrefs: clicking that point (a heatmap cell, a bar) opens it.
  // The page shows a chart's title as HTML above it (it wraps on a phone); the figure keeps it,
  // and the download button puts it back, so an exported image is titled.
  function exportFigure(node) {
    var fig = JSON.parse(document.getElementById(node.getAttribute("data-figure")).textContent);
    var layout = fig.layout || {};
    if (layout.meta && layout.meta.titleMargin) layout.margin = Object.assign({}, layout.margin || {}, { t: layout.meta.titleMargin });
    layout.width = node.clientWidth || 900;
    layout.height = layout.height || node.clientHeight || 400;
    return { data: node.data || fig.data || [], layout: layout };
  }

  function downloadImage(node) {
    var fig = exportFigure(node), name = (node.id || "chart").replace(/^chart-/, "");
    return window.Plotly.toImage(fig, { format: "png", width: fig.layout.width, height: fig.layout.height, scale: 2 })
      .then(function (url) {
        var a = el("a", { href: url, download: name + ".png" });
        document.body.appendChild(a); a.click(); a.remove();
      });
  }

  function drawCharts() {
    var charts = document.querySelectorAll("div.dd-chart[data-figure]");
    for (var i = 0; i < charts.length; i++) {
      var node = charts[i];
      if (!window.Plotly) { node.textContent = "The chart library did not load."; continue; }
      var fig = JSON.parse(document.getElementById(node.getAttribute("data-figure")).textContent);
      var layout = Object.assign({}, fig.layout || {}, { title: { text: "" } });
      if (node.clientWidth < 560) narrow(layout, fig.data || []);
      window.Plotly.newPlot(node, fig.data || [], layout, {
        responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d", "toImage"],
        modeBarButtonsToAdd: [{ name: "Download plot as a png (titled)", icon: window.Plotly.Icons.camera,
                                click: function (gd) { downloadImage(gd); } }]
      });
      node.on("plotly_click", function (ev) {
        var p = ev && ev.points && ev.points[0];
        var href = p && p.customdata;
        if (typeof href === "string" && href) window.location.href = href;
      });
      if (layout.meta && layout.meta.rowLinks) {
        linkRows(node, layout.meta.rowLinks);
        node.on("plotly_afterplot", linkRows.bind(null, node, layout.meta.rowLinks));
      }
    }
  }

  // Row labels of a heatmap (essay ids) open their page. Plotly redraws ticks on every relayout,
  // so the links are set again after each plot.
  function linkRows(node, links) {
    Array.prototype.forEach.call(node.querySelectorAll(".yaxislayer-above .ytick text"), function (t) {
      var d = t.__data__, i = d ? Math.round(d.x) : -1;
      if (!links[i] || t.getAttribute("data-href")) return;
      t.setAttribute("data-href", links[i]);
      t.style.cursor = "pointer";
      t.style.pointerEvents = "all";
      t.style.textDecoration = "underline";
      t.addEventListener("click", function () { window.location.href = links[i]; });
    });
  }

  // On a phone the legend goes under the plot, long legend names are shortened (a Plotly legend
  // never wraps) and margins shrink, so nothing overlaps or leaves the screen.
  var LEGEND_CHARS = 34;
  function shorten(s) { return typeof s === "string" && s.length > LEGEND_CHARS ? s.slice(0, LEGEND_CHARS - 1) + "…" : s; }
  function narrow(layout, data) {
    data.forEach(function (t) { t.name = shorten(t.name); });
    ["xaxis", "yaxis"].forEach(function (a) {
      var title = layout[a] && layout[a].title;
      if (title && title.text) title.text = shorten(title.text);
    });
    layout.legend = Object.assign({}, layout.legend || {}, { orientation: "h", x: 0, xanchor: "left", y: -0.25, yanchor: "top" });
    layout.margin = Object.assign({}, layout.margin || {}, { l: 40, r: 8 });
  }

  // ---- tables: sort, filter, page, URL state, CSV --------------------------------------------
  // Every table is a list of row models {t: texts, k: sort keys, low: text to match, node}, filtered,
  // sorted and shown a page at a time. A small table's rows come from its HTML; a large one's
  // (class dd-data) from compact JSON in the page (render.table), turned into rows only when shown,
  // so every row of any cohort is filtered and sorted without the page holding one <tr> each.
  var PAGE_ROWS = 100;
  var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  function keyOf(s) {
    if (s === "" || s == null) return "";
    if (typeof s === "number") return s;
    var n = Number(s);
    return isNaN(n) ? s : n;
  }

  function compare(a, b) {
    if (a === "" && b === "") return 0;
    if (a === "") return 1;           // blanks last, whatever the direction
    if (b === "") return -1;
    if (typeof a === "number" && typeof b === "number") return a - b;
    return collator.compare(String(a), String(b));
  }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;
    return e;
  }

  function domRows(table) {
    return Array.prototype.map.call(table.tBodies[0].rows, function (tr, i) {
      var t = [], k = [];
      Array.prototype.forEach.call(tr.cells, function (cell) {
        var text = cell.textContent.trim();
        t.push(text);
        k.push(keyOf(cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : text));
      });
      return { t: t, k: k, i: i, node: tr, low: t.join(" ").toLowerCase() };
    });
  }

  // ---- evaluation ids ------------------------------------------------------------------------
  // An evaluation's gen_id is BLAKE2b-80 of its essay, rubric, model and replicate (pipeline/ids.py),
  // so the score matrix sends only the replicate and rebuilds each link's id here. BLAKE2b
  // (RFC 7693) on 32-bit halves: a 64-bit word i is words 2i (low) and 2i + 1 (high).
  var B2B_IV = [0xf3bcc908, 0x6a09e667, 0x84caa73b, 0xbb67ae85, 0xfe94f82b, 0x3c6ef372, 0x5f1d36f1, 0xa54ff53a,
    0xade682d1, 0x510e527f, 0x2b3e6c1f, 0x9b05688c, 0xfb41bd6b, 0x1f83d9ab, 0x137e2179, 0x5be0cd19];
  var B2B_SIGMA = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3,
    11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4, 7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8,
    9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13, 2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9,
    12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11, 13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10,
    6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5, 10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0,
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3];
  var b2bV = new Uint32Array(32), b2bM = new Uint32Array(32);

  function b2bAdd(a, b0, b1) {   // v[a] += (b1:b0), wrapping at 2^64
    var v = b2bV, o0 = v[a] + b0, o1 = v[a + 1] + b1;
    if (o0 >= 0x100000000) o1++;
    v[a] = o0; v[a + 1] = o1;
  }

  function b2bG(a, b, c, d, ix, iy) {
    var v = b2bV, m = b2bM, x0, x1;
    b2bAdd(a, v[b], v[b + 1]); b2bAdd(a, m[ix], m[ix + 1]);
    x0 = v[d] ^ v[a]; x1 = v[d + 1] ^ v[a + 1]; v[d] = x1; v[d + 1] = x0;                          // >>> 32
    b2bAdd(c, v[d], v[d + 1]);
    x0 = v[b] ^ v[c]; x1 = v[b + 1] ^ v[c + 1];
    v[b] = (x0 >>> 24) ^ (x1 << 8); v[b + 1] = (x1 >>> 24) ^ (x0 << 8);                         // >>> 24
    b2bAdd(a, v[b], v[b + 1]); b2bAdd(a, m[iy], m[iy + 1]);
    x0 = v[d] ^ v[a]; x1 = v[d + 1] ^ v[a + 1];
    v[d] = (x0 >>> 16) ^ (x1 << 16); v[d + 1] = (x1 >>> 16) ^ (x0 << 16);                       // >>> 16
    b2bAdd(c, v[d], v[d + 1]);
    x0 = v[b] ^ v[c]; x1 = v[b + 1] ^ v[c + 1];
    v[b] = (x1 >>> 31) ^ (x0 << 1); v[b + 1] = (x0 >>> 31) ^ (x1 << 1);                         // >>> 63
  }

  function b2bCompress(h, block, t, last) {
    var v = b2bV, m = b2bM, i, s;
    for (i = 0; i < 16; i++) { v[i] = h[i]; v[i + 16] = B2B_IV[i]; }
    v[24] ^= t; v[25] ^= t / 0x100000000;
    if (last) { v[28] = ~v[28]; v[29] = ~v[29]; }
    for (i = 0; i < 32; i++) m[i] = block[4 * i] ^ (block[4 * i + 1] << 8) ^ (block[4 * i + 2] << 16) ^ (block[4 * i + 3] << 24);
    for (i = 0; i < 12; i++) {
      s = i * 16;
      b2bG(0, 8, 16, 24, 2 * B2B_SIGMA[s], 2 * B2B_SIGMA[s + 1]);
      b2bG(2, 10, 18, 26, 2 * B2B_SIGMA[s + 2], 2 * B2B_SIGMA[s + 3]);
      b2bG(4, 12, 20, 28, 2 * B2B_SIGMA[s + 4], 2 * B2B_SIGMA[s + 5]);
      b2bG(6, 14, 22, 30, 2 * B2B_SIGMA[s + 6], 2 * B2B_SIGMA[s + 7]);
      b2bG(0, 10, 20, 30, 2 * B2B_SIGMA[s + 8], 2 * B2B_SIGMA[s + 9]);
      b2bG(2, 12, 22, 24, 2 * B2B_SIGMA[s + 10], 2 * B2B_SIGMA[s + 11]);
      b2bG(4, 14, 16, 26, 2 * B2B_SIGMA[s + 12], 2 * B2B_SIGMA[s + 13]);
      b2bG(6, 8, 18, 28, 2 * B2B_SIGMA[s + 14], 2 * B2B_SIGMA[s + 15]);
    }
    for (i = 0; i < 16; i++) h[i] = h[i] ^ v[i] ^ v[i + 16];
  }

  function blake2b(bytes, outlen) {
    var h = new Uint32Array(B2B_IV), block = new Uint8Array(128), c = 0, t = 0, out = new Uint8Array(outlen), i;
    h[0] ^= 0x01010000 ^ outlen;
    for (i = 0; i < bytes.length; i++) {
      if (c === 128) { t += c; b2bCompress(h, block, t, false); c = 0; }
      block[c++] = bytes[i];
    }
    t += c;
    while (c < 128) block[c++] = 0;
    b2bCompress(h, block, t, true);
    for (i = 0; i < outlen; i++) out[i] = h[i >> 2] >> (8 * (i & 3));
    return out;
  }

  // ids.evaluation_gen_id(essay, rubric, model, replicate)
  function evaluationId(essay, rubric, model, replicate) {
    var sig = [essay, rubric, model, replicate].map(function (s) { return String(s).trim().toLowerCase(); }).join("|");
    var d = blake2b(new TextEncoder().encode(sig), 10), hex = "";
    for (var i = 0; i < d.length; i++) hex += (d[i] < 16 ? "0" : "") + d[i].toString(16);
    return "v_" + BigInt("0x" + hex).toString(36);
  }

  function matrixText(m) { return m.map(function (v) { return v[1]; }).join(" · "); }

  function dataRows(table) {
    var blob = JSON.parse(document.getElementById(table.getAttribute("data-rows")).textContent);
    var dicts = blob.d || {}, links = blob.h || {}, rows = blob.rows, essays = blob.e || null, out = new Array(rows.length);
    table._scales = blob.sc || {};
    table._evaluators = blob.ev || {};
    for (var i = 0; i < rows.length; i++) {
      var src = rows[i], t = new Array(src.length), k = new Array(src.length);
      for (var j = 0; j < src.length; j++) {
        var v = src[j], d = dicts[j];
        if (d && typeof v === "number") v = src[j] = d[v];
        if (links[j] && typeof v === "string") v = src[j] = { t: v, h: links[j][0] + v + links[j][1], c: links[j][2] };
        if (v == null) { t[j] = ""; k[j] = ""; }
        else if (typeof v === "string") { t[j] = v; k[j] = keyOf(v); }
        else if (typeof v === "number") { t[j] = String(v); k[j] = v; }
        else if (Array.isArray(v)) { t[j] = v[0]; k[j] = keyOf(v[1]); }
        else if (v.m) { t[j] = matrixText(v.m); k[j] = keyOf(v.s); }
        else if (v.x != null) { t[j] = v.t || ""; k[j] = keyOf(v.s != null ? v.s : v.t); }
        else { t[j] = v.t; k[j] = keyOf(v.t); }
      }
      out[i] = { t: t, k: k, i: i, src: src, essay: essays && essays[i] === 1 ? t[0] : essays ? essays[i] : "", node: null, low: t.join(" ").toLowerCase() };
    }
    return out;
  }

  // One row of a data table as HTML elements; text from data always goes in as text, and the
  // only HTML taken as is ({x}) was escaped when the site was built.
  function buildRow(t, row) {
    var tr = document.createElement("tr");
    for (var j = 0; j < row.src.length; j++) {
      var v = row.src[j], th = t.heads[j], td = document.createElement("td");
      var key = row.k[j];
      if (th.classList.contains("num")) td.className = "num";
      else if (th.hasAttribute("data-wrap") && v != null) td.className = "wrap";
      if (v == null) { tr.appendChild(td); continue; }
      if (typeof v === "object" && !Array.isArray(v) && v.m) {
        // the colour class of the mean score_norm, as pages.heat_class gives it
        td.className = v.s === "" ? (v.m.length ? "" : "dd-none") : "dd-heat dd-heat-" + Math.min(9, Math.max(0, Math.floor(v.s * 10)));
        td.setAttribute("data-sort", v.s === "" ? "" : String(v.s));
        var base = row.essay ? "essays/" + row.essay + ".html#" : "", scale = t.table._scales[j] || "";
        v.m.forEach(function (e, n) {
          if (n) td.appendChild(document.createTextNode(" · "));
          // 0: an id the page rebuilds from the row's essay, the column and the replicate
          var ev = t.table._evaluators[j], rep = e[3] === "f" || e[3] === "p" ? e[4] : e[2];
          var gid = e[0] === 0 && ev ? evaluationId(row.essay, ev[1], ev[0], rep) : e[0];
          var a = el(base ? "a" : "span", base ? { href: base + gid } : {}, e[1]);
          if (e[3] === "f") { a.className = "dd-fail"; a.title = e[2]; }
          else if (e[3] === "p") { a.className = "dd-pending"; a.title = e[2]; }
          else a.title = "replicate " + e[2] + ": " + e[1] + " on " + (e[3] || scale);
          td.appendChild(a);
        });
      } else if (typeof v === "object" && !Array.isArray(v) && v.x != null) {
        td.innerHTML = v.x;
        if (v.k) td.className = v.k;
        if (v.s != null) td.setAttribute("data-sort", String(v.s));
      } else if (typeof v === "object" && !Array.isArray(v)) {
        var link = el("a", { href: v.h });
        if (v.c) link.appendChild(el("code", {}, v.t)); else link.textContent = v.t;
        td.appendChild(link);
        td.setAttribute("data-sort", v.t);
      } else {
        if (th.hasAttribute("data-code")) td.appendChild(el("code", {}, row.t[j])); else td.textContent = row.t[j];
        if (th.classList.contains("num")) td.setAttribute("data-sort", key === "" ? "" : String(key));
      }
      tr.appendChild(td);
    }
    return tr;
  }

  var tables = [];

  function params() { return new URLSearchParams(window.location.search); }

  function writeUrl() {
    var p = params();
    tables.forEach(function (t) {
      Array.from(p.keys()).forEach(function (k) { if (k.indexOf(t.id + ".") === 0) p.delete(k); });
      if (t.text.value) p.set(t.id + ".q", t.text.value);
      t.controls.forEach(function (c) {
        if (c.kind === "select" && c.input.value) p.set(t.id + "." + c.key, c.input.value);
        if (c.kind === "range") {
          if (c.min.value !== "") p.set(t.id + "." + c.key + ".min", c.min.value);
          if (c.max.value !== "") p.set(t.id + "." + c.key + ".max", c.max.value);
        }
      });
      if (t.sort) p.set(t.id + ".sort", t.sort);
      if (t.page > 0) p.set(t.id + ".page", String(t.page + 1));
    });
    var q = p.toString();
    try {
      window.history.replaceState(null, "", (q ? "?" + q : window.location.pathname.split("/").pop()) + window.location.hash);
    } catch (e) { /* a browser that refuses: the filter still works, it just is not in the URL */ }
  }

  function numericColumn(t, idx) {
    var seen = 0;
    for (var r = 0; r < t.rows.length; r++) {
      var k = t.rows[r].k[idx];
      if (k === "") continue;
      if (typeof k !== "number") return false;
      seen++;
    }
    return seen > 0;
  }

  function sortRows(t, idx, desc) {
    for (var i = 0; i < t.heads.length; i++) t.heads[i].removeAttribute("aria-sort");
    t.heads[idx].setAttribute("aria-sort", desc ? "descending" : "ascending");
    t.rows.sort(function (p, q) {
      var a = p.k[idx], b = q.k[idx];
      if (a === "" || b === "") return compare(a, b) || p.i - q.i;
      return (desc ? -compare(a, b) : compare(a, b)) || p.i - q.i;
    });
  }

  function applyFilter(t) {
    var words = t.text.value.toLowerCase().split(/\s+/).filter(Boolean);
    var active = t.controls.filter(function (c) {
      return c.kind === "select" ? c.input.value : c.min.value !== "" || c.max.value !== "";
    });
    var shown = [], rows = t.rows;
    for (var r = 0; r < rows.length; r++) {
      var row = rows[r], ok = true;
      for (var w = 0; w < words.length && ok; w++) ok = row.low.indexOf(words[w]) >= 0;
      for (var i = 0; i < active.length && ok; i++) {
        var c = active[i];
        if (c.kind === "select") ok = row.t[c.idx] === c.input.value;
        else {
          var x = row.k[c.idx];
          if (typeof x !== "number") ok = false;   // unknown is not inside any range
          else {
            if (c.min.value !== "" && x < Number(c.min.value)) ok = false;
            if (c.max.value !== "" && x > Number(c.max.value)) ok = false;
          }
        }
      }
      if (ok) shown.push(row);
    }
    t.shown = shown;
    var n = rows.length;
    t.count.textContent = shown.length === n ? n.toLocaleString("en") + " rows"
      : shown.length.toLocaleString("en") + " of " + n.toLocaleString("en") + " rows";
  }

  function render(t) {
    var pages = Math.max(1, Math.ceil(t.shown.length / PAGE_ROWS));
    t.page = Math.min(Math.max(0, t.page), pages - 1);
    var from = t.page * PAGE_ROWS, to = Math.min(t.shown.length, from + PAGE_ROWS);
    var body = t.table.tBodies[0], frag = document.createDocumentFragment();
    for (var r = from; r < to; r++) {
      var row = t.shown[r];
      if (!row.node) row.node = buildRow(t, row);
      frag.appendChild(row.node);
    }
    body.textContent = "";
    body.appendChild(frag);
    addPicks(body);
    t.pager.hidden = pages < 2;
    t.prev.disabled = t.page === 0;
    t.next.disabled = t.page >= pages - 1;
    t.where.textContent = t.shown.length ? "rows " + (from + 1).toLocaleString("en") + "–" + to.toLocaleString("en") +
      " of " + t.shown.length.toLocaleString("en") : "no rows";
  }

  function csvOf(t) {
    var esc = function (s) { return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; };
    var lines = [Array.prototype.map.call(t.heads, function (h) { return esc(h.textContent.trim()); }).join(",")];
    t.shown.forEach(function (row) { lines.push(row.t.map(esc).join(",")); });
    return lines.join("\n") + "\n";
  }

  // The essay page a row links to (absolute URL), for previous/next within a filtered view.
  function essayOf(row) {
    if (row.essayUrl !== undefined) return row.essayUrl;
    var href = "";
    if (row.node) {
      var a = row.node.querySelector('a[href*="essays/"]');
      if (a) href = a.href;
    } else {
      for (var j = 0; j < row.src.length && !href; j++) {
        var v = row.src[j];
        if (v && v.h && /essays\//.test(v.h)) href = new URL(v.h, window.location.href).href;
      }
    }
    return (row.essayUrl = href.split("#")[0]);
  }

  function setupTable(table, n) {
    if (!table.tHead || !table.tBodies.length) return;
    var heads = table.tHead.rows[0].cells;
    var t = { table: table, id: table.getAttribute("data-table") || "t" + (n + 1), heads: heads, controls: [], page: 0 };
    t.rows = table.classList.contains("dd-data") ? dataRows(table) : domRows(table);
    var bar = el("div", { "class": "dd-filters", role: "group", "aria-label": "Filter this table" });
    t.text = el("input", { type: "search", "class": "dd-filter-text", placeholder: "Filter rows…", "aria-label": "Filter rows by text" });
    bar.appendChild(t.text);
    Array.prototype.forEach.call(heads, function (th, idx) {
      var kind = th.getAttribute("data-filter"), key = th.getAttribute("data-key") || String(idx), label = th.textContent.trim();
      if (kind === "select") {
        var values = {};
        for (var r = 0; r < t.rows.length; r++) { var v = t.rows[r].t[idx]; if (v) values[v] = 1; }
        var keys = Object.keys(values).sort(function (a, b) { return collator.compare(a, b); });
        if (keys.length < 2 || keys.length > 60) return;
        var sel = el("select", { "aria-label": "Filter by " + label, "data-key": key });
        sel.appendChild(el("option", { value: "" }, label + ": all"));
        keys.forEach(function (k) { sel.appendChild(el("option", { value: k }, k)); });
        bar.appendChild(sel);
        t.controls.push({ kind: "select", key: key, idx: idx, input: sel });
      } else if (kind === "range") {
        var box = el("span", { "class": "dd-range" });
        box.appendChild(el("span", {}, label + " "));
        var lo = el("input", { type: "number", step: "any", placeholder: "min", "aria-label": label + " at least", "data-key": key + ".min" });
        var hi = el("input", { type: "number", step: "any", placeholder: "max", "aria-label": label + " at most", "data-key": key + ".max" });
        box.appendChild(lo); box.appendChild(el("span", {}, "–")); box.appendChild(hi);
        bar.appendChild(box);
        t.controls.push({ kind: "range", key: key, idx: idx, min: lo, max: hi });
      }
    });
    t.count = el("span", { "class": "dd-filter-count", "aria-live": "polite" });
    var hint = el("span", { "class": "dd-scroll-hint", hidden: "" }, "⇆ wider than the page: scroll the table sideways");
    var clear = el("button", { type: "button" }, "Clear");
    var csv = el("button", { type: "button", title: "Download the rows shown (every page), as CSV" }, "CSV of these rows");
    bar.appendChild(t.count); bar.appendChild(clear); bar.appendChild(csv); bar.appendChild(hint);
    var wrap = table.closest(".dd-table-wrap") || table;
    wrap.parentNode.insertBefore(bar, wrap);
    t.pager = el("nav", { "class": "dd-pager", "aria-label": "Pages of this table" });
    t.prev = el("button", { type: "button", "class": "dd-page-prev" }, "‹ previous");
    t.where = el("span", { "class": "dd-page-where" });
    t.next = el("button", { type: "button", "class": "dd-page-next" }, "next ›");
    t.pager.appendChild(t.prev); t.pager.appendChild(t.where); t.pager.appendChild(t.next);
    wrap.parentNode.insertBefore(t.pager, wrap.nextSibling);
    var showHint = function () { hint.hidden = wrap.scrollWidth <= wrap.clientWidth + 1; };
    window.addEventListener("resize", showHint);
    window.setTimeout(showHint, 0);

    // the filter, sort and page from the URL, so a shared or reloaded view shows the same rows
    var p = params();
    t.text.value = p.get(t.id + ".q") || "";
    t.controls.forEach(function (c) {
      if (c.kind === "select") {
        var v = p.get(t.id + "." + c.key);
        if (v && Array.prototype.some.call(c.input.options, function (o) { return o.value === v; })) c.input.value = v;
      } else {
        c.min.value = p.get(t.id + "." + c.key + ".min") || "";
        c.max.value = p.get(t.id + "." + c.key + ".max") || "";
      }
    });
    var onChange = function () { applyFilter(t); t.page = 0; render(t); writeUrl(); };
    bar.addEventListener("input", onChange);
    // a select's change (older browsers fire no input for it); a text box's change comes when it
    // loses focus, on the mousedown of a click in a row, and re-drawing the rows then would lose
    // that click (a link or a pick button replaced under the pointer)
    bar.addEventListener("change", function (ev) { if (ev.target.tagName === "SELECT") onChange(); });
    clear.addEventListener("click", function () {
      t.text.value = "";
      t.controls.forEach(function (c) { if (c.input) c.input.value = ""; else { c.min.value = ""; c.max.value = ""; } });
      onChange();
    });
    csv.addEventListener("click", function () {
      var a = el("a", { download: (document.title.split(" · ")[0] || "table").replace(/[^\w.-]+/g, "_") + "-" + t.id + ".csv" });
      a.href = URL.createObjectURL(new Blob([csvOf(t)], { type: "text/csv" }));
      document.body.appendChild(a); a.click(); a.remove();
    });
    t.prev.addEventListener("click", function () { t.page--; render(t); writeUrl(); });
    t.next.addEventListener("click", function () { t.page++; render(t); writeUrl(); });
    if (table.classList.contains("dd-sortable")) {
      Array.prototype.forEach.call(heads, function (th, idx) {
        th.setAttribute("title", (th.getAttribute("title") ? th.getAttribute("title") + ". " : "") + "Click to sort");
        th.addEventListener("click", function () {
          // numbers sort best (largest) first on the first click, words A to Z, rank 1 first
          var now = th.getAttribute("aria-sort");
          var desc = now ? now === "ascending" : th.getAttribute("data-key") !== "rank" && numericColumn(t, idx);
          sortRows(t, idx, desc);
          t.sort = (th.getAttribute("data-key") || idx) + (desc ? ":desc" : ":asc");
          applyFilter(t); t.page = 0; render(t); writeUrl();
        });
      });
      var s = p.get(t.id + ".sort");
      if (s) {
        var bits = s.split(":"), desc = bits.pop() === "desc", key = bits.join(":");
        Array.prototype.forEach.call(heads, function (th, idx) {
          if ((th.getAttribute("data-key") || String(idx)) === key) { sortRows(t, idx, desc); t.sort = s; }
        });
      }
    }
    // an essay opened from a filtered table gets previous/next within the rows shown (all pages)
    table.addEventListener("click", function (ev) {
      var a = ev.target.closest && ev.target.closest("a[href]");
      if (!a || !/\/essays\/[^/]+\.html/.test(a.href)) return;
      var seen = {}, ids = [];
      t.shown.forEach(function (row) {
        var u = essayOf(row);
        if (u && !seen[u]) { seen[u] = 1; ids.push(u); }
      });
      try {
        window.sessionStorage.setItem("dd-seq", JSON.stringify({ pages: ids, from: window.location.href, label: t.count.textContent }));
      } catch (e) { /* storage refused: the essay page falls back to rank order */ }
    });
    tables.push(t);
    applyFilter(t);
    t.page = Math.max(0, (parseInt(p.get(t.id + ".page"), 10) || 1) - 1);
    render(t);
  }

  function setupTables() {
    Array.prototype.forEach.call(document.querySelectorAll("table.dd-table"), setupTable);
  }

  // ---- previous / next within the view an essay was opened from ----------------------------
  function essaySequence() {
    var box = document.getElementById("dd-seq");
    if (!box) return;
    var seq;
    try { seq = JSON.parse(window.sessionStorage.getItem("dd-seq") || "null"); } catch (e) { seq = null; }
    if (!seq || !seq.pages) return;
    var here = window.location.href.split("#")[0].split("?")[0];
    var i = seq.pages.indexOf(here);
    if (i < 0) return;
    box.textContent = "In the view you came from (" + (i + 1) + " of " + seq.pages.length + "): ";
    if (i > 0) box.appendChild(el("a", { href: seq.pages[i - 1], rel: "prev", "class": "dd-seq-prev" }, "← previous"));
    if (i > 0 && i + 1 < seq.pages.length) box.appendChild(document.createTextNode(" · "));
    if (i + 1 < seq.pages.length) box.appendChild(el("a", { href: seq.pages[i + 1], rel: "next", "class": "dd-seq-next" }, "next →"));
    box.appendChild(document.createTextNode(" · "));
    box.appendChild(el("a", { href: seq.from }, "back to the view"));
    box.hidden = false;
  }

  // An evaluation opened by its anchor (a matrix cell) is highlighted and its prompt stays folded.
  function markTarget() {
    var id = decodeURIComponent(window.location.hash.slice(1));
    var target = id && document.getElementById(id);
    if (target && target.tagName === "DETAILS") target.open = true;
  }

  // ---- search -------------------------------------------------------------------------------
  var SNIPPET = 90;

  function terms(q) { return q.toLowerCase().split(/[\s,;:!?()"'“”]+/).filter(Boolean); }

  // Every occurrence of every term, as [start, end) ranges merged where they overlap.
  function ranges(low, ts) {
    var out = [];
    ts.forEach(function (t) {
      for (var k = low.indexOf(t); k >= 0 && t; k = low.indexOf(t, k + t.length)) out.push([k, k + t.length]);
    });
    out.sort(function (a, b) { return a[0] - b[0]; });
    var merged = [];
    out.forEach(function (r) {
      var last = merged[merged.length - 1];
      if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]); else merged.push(r.slice());
    });
    return merged;
  }

  // A window of text around the first occurrence of each term (so every term found shows, however
  // far apart), windows merged where they meet, every occurrence of every term marked.
  function snippet(text, ts) {
    var low = text.toLowerCase(), wins = [];
    ts.forEach(function (t) {
      var at = low.indexOf(t);
      if (at >= 0) wins.push([Math.max(0, at - SNIPPET), Math.min(text.length, at + t.length + SNIPPET)]);
    });
    if (!wins.length) wins.push([0, Math.min(text.length, 2 * SNIPPET)]);
    wins.sort(function (a, b) { return a[0] - b[0]; });
    var merged = [];
    wins.forEach(function (r) {
      var last = merged[merged.length - 1];
      if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]); else merged.push(r.slice());
    });
    var p = el("p", { "class": "dd-snippet" });
    merged.slice(0, 4).forEach(function (win, n) {
      if (win[0] > 0 || n > 0) p.appendChild(document.createTextNode(n ? " … " : "…"));
      var part = text.slice(win[0], win[1]), pos = 0;
      ranges(part.toLowerCase(), ts).forEach(function (r) {
        p.appendChild(document.createTextNode(part.slice(pos, r[0])));
        p.appendChild(el("mark", {}, part.slice(r[0], r[1])));
        pos = r[1];
      });
      p.appendChild(document.createTextNode(part.slice(pos)));
    });
    if (merged[merged.length - 1][1] < text.length) p.appendChild(document.createTextNode("…"));
    return p;
  }

  function findHits(ts) {
    var docs = window.DDSEARCH || [], hits = [];
    docs.forEach(function (d) {
      if (!d._low) {
        d._title = (d.t || "").toLowerCase();
        d._low = d.p.map(function (p) { return (p[1] + " " + p[2]).toLowerCase(); });
      }
      var score = 0;
      for (var i = 0; i < ts.length; i++) {
        var found = d._title.indexOf(ts[i]) >= 0 ? 5 : 0;
        for (var j = 0; j < d._low.length; j++) if (d._low[j].indexOf(ts[i]) >= 0) found += 1;
        if (!found) return;
        score += found;
      }
      // the part to show: the one holding the most of the terms (the first such)
      var best = 0, bestN = -1;
      for (var a = 0; a < d._low.length; a++) {
        var n = 0;
        for (var b = 0; b < ts.length; b++) if (d._low[a].indexOf(ts[b]) >= 0) n++;
        if (n > bestN) { best = a; bestN = n; }
      }
      // a search for an evaluation's id opens that evaluation, not the list of ids
      for (var c = 0; c < d.p.length; c++) if (d.p[c][0] && d.p[c][0].toLowerCase() === ts[0]) best = c;
      hits.push({ d: d, score: score, part: best });
    });
    hits.sort(function (a, b) { return b.score - a.score || (a.d.t < b.d.t ? -1 : 1); });
    return hits;
  }

  var SHOWN_RESULTS = 200;

  function showResults(q, list, status) {
    var ts = terms(q);
    list.textContent = "";
    if (!ts.length) { status.textContent = "Type words to search every essay, draft, evaluation and page."; return; }
    var hits = findHits(ts);
    status.textContent = hits.length ? hits.length + (hits.length === 1 ? " result" : " results") + " for “" + q + "”" +
      (hits.length > SHOWN_RESULTS ? " (the first " + SHOWN_RESULTS + " shown)" : "") : "No results for “" + q + "”.";
    var frag = document.createDocumentFragment();
    hits.slice(0, SHOWN_RESULTS).forEach(function (h) {
      var part = h.d.p[h.part] || ["", "", ""];
      var li = el("li", { "class": "dd-result" });
      var head = el("div", { "class": "dd-result-head" });
      head.appendChild(el("a", { href: h.d.u + (part[0] ? "#" + part[0] : "") }, h.d.t));
      if (h.d.c) head.appendChild(el("span", { "class": "dd-tag", title: "cohort" }, "cohort " + h.d.c));
      if (h.d.s) head.appendChild(el("span", { "class": "dd-result-score", title: "the essay's standing in its cohort" }, h.d.s));
      li.appendChild(head);
      var meta = el("p", { "class": "dd-meta" }, "found in: " + part[1]);
      if (part[3]) meta.appendChild(el("span", { "class": "dd-part-score" }, " · " + part[3]));
      li.appendChild(meta);
      li.appendChild(snippet(part[2] || "", ts));
      // a word found only in another part of the document is shown (highlighted) from there
      var low = (part[2] || "").toLowerCase(), shownParts = {};
      ts.forEach(function (term) {
        if (low.indexOf(term) >= 0) return;
        for (var j = 0; j < h.d.p.length; j++) {
          if (j !== h.part && !shownParts[j] && (h.d.p[j][2] || "").toLowerCase().indexOf(term) >= 0) {
            shownParts[j] = 1;
            low += " " + h.d.p[j][2].toLowerCase();
            li.appendChild(el("p", { "class": "dd-meta" }, "also in: " + h.d.p[j][1]));
            li.appendChild(snippet(h.d.p[j][2], ts));
            return;
          }
        }
      });
      frag.appendChild(li);
    });
    list.appendChild(frag);
    addPicks(list);
  }

  // Results follow the box as one types (no Enter needed); the query stays in the URL.
  function search() {
    var box = document.getElementById("dd-search-q"), list = document.getElementById("dd-search-results");
    var status = document.getElementById("dd-search-status");
    if (!box || !list) return;
    box.value = params().get("q") || "";
    if (box.value) showResults(box.value, list, status);
    var timer = null;
    box.addEventListener("input", function () {
      window.clearTimeout(timer);
      timer = window.setTimeout(function () {
        showResults(box.value, list, status);
        var p = params();
        if (box.value) p.set("q", box.value); else p.delete("q");
        try { window.history.replaceState(null, "", "?" + p.toString()); } catch (e) { /* not in the URL then */ }
      }, 80);
    });
    var form = box.form;
    if (form) form.addEventListener("submit", function (ev) { ev.preventDefault(); showResults(box.value, list, status); });
  }

  // ---- compare: pick essays anywhere, see them side by side ---------------------------------
  // Picks live in localStorage ("dd-compare": [{id, cohort, page}]), so they survive moving
  // between pages; the compare page takes its essays from its address (?e=id,id), so a
  // comparison can be shared. Each essay's data is a script (essays/<id>.js): no fetch.
  var PICKS = "dd-compare";

  function loadPicks() {
    try { return JSON.parse(window.localStorage.getItem(PICKS) || "[]") || []; } catch (e) { return []; }
  }
  function savePicks(p) { try { window.localStorage.setItem(PICKS, JSON.stringify(p)); } catch (e) { /* storage refused */ } }

  // {id, cohort, page} of an essay page's absolute URL, or null
  function essayRef(href) {
    var m = /\/cohorts\/([^/]+)\/essays\/([^/#?]+)\.html(?:$|[#?])/.exec(href);
    if (!m || m[2] === "index" || /^page-/.test(m[2])) return null;
    return { id: decodeURIComponent(m[2]), cohort: decodeURIComponent(m[1]), page: href.split("#")[0].split("?")[0] };
  }

  function isPicked(ref) { return loadPicks().some(function (p) { return p.id === ref.id && p.cohort === ref.cohort; }); }

  function pickButton(ref) {
    var b = el("button", { type: "button", "class": "dd-pick", "data-essay": ref.id, title: "Pick this essay to compare with others" });
    var show = function () {
      var on = isPicked(ref);
      b.setAttribute("aria-pressed", on ? "true" : "false");
      b.textContent = on ? "✓ compare" : "+ compare";
    };
    show();
    b.addEventListener("click", function (ev) {
      ev.preventDefault(); ev.stopPropagation();
      var picks = loadPicks().filter(function (p) { return !(p.id === ref.id && p.cohort === ref.cohort); });
      if (picks.length === loadPicks().length) picks.push(ref);
      savePicks(picks);
      document.querySelectorAll('button.dd-pick[data-essay="' + CSS.escape(ref.id) + '"]').forEach(function (x) { x._show && x._show(); });
      show(); tray();
    });
    b._show = show;
    return b;
  }

  function addPicks(root) {
    Array.prototype.forEach.call((root || document).querySelectorAll("a[href]"), function (a) {
      if (a.hasAttribute("data-pickable") || a.closest(".dd-pick-skip")) return;
      var ref = essayRef(a.href);
      // a link into a part of an essay (a matrix cell's evaluation) is not the essay's own link,
      // except a search result's
      if (!ref || (/#./.test(a.getAttribute("href")) && !a.closest(".dd-result-head"))) return;
      a.setAttribute("data-pickable", "1");
      a.parentNode.insertBefore(pickButton(ref), a.nextSibling);
    });
  }

  function compareHref(cohort, ids, page) {
    return new URL("../compare.html?e=" + ids.map(encodeURIComponent).join(","), page).href;
  }

  function tray() {
    if (document.getElementById("dd-rate")) return;   // rating is blind and on its own: no compare tray
    var box = document.getElementById("dd-tray");
    var picks = loadPicks();
    if (!picks.length) { if (box) box.remove(); return; }
    if (!box) { box = el("div", { id: "dd-tray", "class": "dd-tray", role: "region", "aria-label": "Picked essays" }); document.body.appendChild(box); }
    box.textContent = "";
    var by = {};
    picks.forEach(function (p) { (by[p.cohort] = by[p.cohort] || []).push(p); });
    Object.keys(by).forEach(function (c) {
      var ps = by[c];
      var a = el("a", { href: compareHref(c, ps.map(function (p) { return p.id; }), ps[0].page), "class": "dd-tray-go" },
        "Compare " + ps.length + " essay" + (ps.length === 1 ? "" : "s") + " of " + c + " →");
      box.appendChild(a);
    });
    var clear = el("button", { type: "button" }, "clear picks");
    clear.addEventListener("click", function () {
      savePicks([]); tray();
      document.querySelectorAll("button.dd-pick").forEach(function (x) { x._show && x._show(); });
    });
    box.appendChild(clear);
  }

  function essayPagePick() {
    var h = document.getElementById("essay-title");
    var ref = h && essayRef(window.location.href);
    if (ref) h.appendChild(pickButton(ref));
  }

  // -- the compare page
  function wordDiff(a, b) {
    var x = a.split(/(\s+)/).filter(Boolean), y = b.split(/(\s+)/).filter(Boolean);
    var n = x.length, m = y.length;
    if (n * m > 4e6) return null;
    var dp = new Array(n + 1);
    for (var i = 0; i <= n; i++) dp[i] = new Uint32Array(m + 1);
    for (i = n - 1; i >= 0; i--) for (var j = m - 1; j >= 0; j--)
      dp[i][j] = x[i] === y[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
    var ops = [];
    i = 0; j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && x[i] === y[j]) { ops.push(["=", x[i]]); i++; j++; }
      else if (j < m && (i === n || dp[i][j + 1] >= dp[i + 1][j])) { ops.push(["+", y[j]]); j++; }
      else { ops.push(["-", x[i]]); i++; }
    }
    return ops;
  }

  function diffNode(a, b) {
    var ops = wordDiff(a || "", b || "");
    if (!ops) return el("p", { "class": "dd-empty" }, "Too long to diff word by word.");
    var box = el("div", { "class": "dd-output dd-word-diff" }), same = 0, words = 0;
    ops.forEach(function (o) {
      if (/^\s+$/.test(o[1])) { box.appendChild(document.createTextNode(o[1])); return; }
      words++;
      if (o[0] === "=") { same++; box.appendChild(document.createTextNode(o[1])); }
      else box.appendChild(el(o[0] === "+" ? "ins" : "del", {}, o[1]));
    });
    box.setAttribute("data-same", String(words ? same / words : 1));
    return box;
  }

  function fmt(v, d) { return v == null ? "" : (Math.round(v * Math.pow(10, d)) / Math.pow(10, d)).toFixed(d); }

  function comparePage() {
    var root = document.getElementById("dd-compare");
    if (!root) return;
    var status = document.getElementById("dd-compare-status"), form = document.getElementById("dd-compare-form");
    var ids = (params().get("e") || "").split(",").map(function (s) { return s.trim(); }).filter(Boolean);
    ids = ids.filter(function (x, i) { return ids.indexOf(x) === i; });
    var setIds = function (next) {
      var p = params();
      if (next.length) p.set("e", next.join(",")); else p.delete("e");
      window.location.search = p.toString();
    };
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var v = form.querySelector("input").value.trim();
      if (v && ids.indexOf(v) < 0) setIds(ids.concat([v]));
    });
    document.getElementById("dd-compare-clear").addEventListener("click", function () { setIds([]); });
    if (!ids.length) { status.textContent = "No essays picked yet."; return; }
    status.textContent = "Loading " + ids.length + " essays…";
    window.DDESSAY = window.DDESSAY || {};
    var left = ids.length, missing = [];
    ids.forEach(function (id) {
      var s = document.createElement("script");
      s.src = "essays/" + encodeURIComponent(id) + ".js";
      s.onload = function () { if (--left === 0) draw(); };
      s.onerror = function () { missing.push(id); if (--left === 0) draw(); };
      document.body.appendChild(s);
    });
    function draw() {
      var es = ids.map(function (id) { return window.DDESSAY[id]; }).filter(Boolean);
      status.textContent = "Comparing " + es.length + " essay" + (es.length === 1 ? "" : "s") +
        (missing.length ? "; not in this cohort: " + missing.join(", ") : "") + (es.length < 2 ? ". Pick one more." : ".");
      root.textContent = "";
      if (!es.length) return;
      var cols = "repeat(" + es.length + ", minmax(16em, 1fr))";
      var grid = function (cls) { var g = el("div", { "class": "dd-compare-grid " + (cls || "") }); g.style.gridTemplateColumns = cols; return g; };
      // heads: lineage and standing
      var heads = grid("dd-compare-heads");
      es.forEach(function (e) {
        var c = el("div", { "class": "dd-compare-col", "data-essay": e.id });
        var h = el("h3", {});
        h.appendChild(el("a", { href: "essays/" + e.id + ".html" }, e.id));
        var rm = el("button", { type: "button", "class": "dd-compare-remove", title: "Remove from the comparison" }, "✕");
        rm.addEventListener("click", function () { setIds(ids.filter(function (x) { return x !== e.id; })); });
        h.appendChild(rm);
        c.appendChild(h);
        var standing = e.mean == null ? "not scored" : (e.rank != null ? "rank " + e.rank + " of " + e.n_ranked + " · " : "") +
          "mean score_norm " + fmt(e.mean, 2) + (e.ci_low != null ? " [" + fmt(e.ci_low, 2) + ", " + fmt(e.ci_high, 2) + "]" : "") +
          ", n=" + (e.n_cells || 0) + " cells";
        c.appendChild(el("p", { "class": "dd-compare-standing" }, standing));
        var ul = el("ul", { "class": "dd-lineage" });
        var li = function (k, v) { var x = el("li", {}); x.appendChild(el("span", { "class": "dd-step" }, k)); x.appendChild(document.createTextNode(v)); ul.appendChild(x); };
        li("concepts", e.concepts ? e.concepts.map(function (k) { return k.name; }).join(" · ") : (e.combo_id || "unknown"));
        if (e.draft) li("draft", e.draft.template_name + " by " + e.draft.model_name + " · " + e.draft.gen_id);
        li("essay", e.essay.template_name + " by " + e.essay.model_name + " · mode " + e.essay.mode + " · replicate " + e.essay.replicate);
        c.appendChild(ul);
        heads.appendChild(c);
      });
      root.appendChild(heads);
      // texts
      root.appendChild(el("h2", { id: "compare-texts" }, "Essays"));
      var texts = grid();
      es.forEach(function (e) { texts.appendChild(el("div", { "class": "dd-output dd-compare-text" }, e.essay.text == null ? "(no text: " + (e.essay.text_problem || "unknown") + ")" : e.essay.text)); });
      root.appendChild(texts);
      // word diff against the first
      if (es.length > 1) {
        root.appendChild(el("h2", { id: "compare-diff" }, "Word diff against " + es[0].id));
        root.appendChild(el("p", { "class": "dd-meta" }, "Deleted words struck through, added words underlined, each essay against the first."));
        es.slice(1).forEach(function (e) {
          var d = el("details", { "class": "dd-compare-block", open: "" });
          d.appendChild(el("summary", {}, es[0].id + " → " + e.id));
          d.appendChild(diffNode(es[0].essay.text, e.essay.text));
          root.appendChild(d);
        });
      }
      // scores: one row per rubric · evaluator · replicate
      root.appendChild(el("h2", { id: "compare-scores" }, "Scores"));
      var keys = [], seen = {};
      es.forEach(function (e) {
        e.evals.forEach(function (v) {
          var k = v.template_id + "\u0000" + v.llm_model_id + "\u0000" + v.replicate;
          if (!seen[k]) { seen[k] = { rubric: v.template_name, model: v.model_name, rep: v.replicate }; keys.push(k); }
        });
      });
      keys.sort(function (a, b) { return collator.compare(a, b); });
      var tbl = el("table", { "class": "dd-table dd-compare-scores" }), thead = el("thead"), tr = el("tr");
      ["rubric", "evaluator", "replicate"].forEach(function (h) { tr.appendChild(el("th", {}, h)); });
      es.forEach(function (e) { tr.appendChild(el("th", { "class": "num" }, e.id)); });
      thead.appendChild(tr); tbl.appendChild(thead);
      var tb = el("tbody");
      var byKey = function (e, k) {
        for (var i = 0; i < e.evals.length; i++) { var v = e.evals[i]; if (v.template_id + "\u0000" + v.llm_model_id + "\u0000" + v.replicate === k) return v; }
        return null;
      };
      keys.forEach(function (k) {
        var r = el("tr");
        r.appendChild(el("td", {}, seen[k].rubric)); r.appendChild(el("td", {}, seen[k].model)); r.appendChild(el("td", {}, String(seen[k].rep)));
        es.forEach(function (e) {
          var v = byKey(e, k), td = el("td", { "class": "num" });
          if (!v) td.textContent = "–";
          else if (v.score != null) {
            var a = el("a", { href: "essays/" + e.id + ".html#" + v.gen_id, title: "score_norm " + fmt(v.score_norm, 2) }, String(v.score) + " on " + v.scale);
            td.appendChild(a);
          } else td.appendChild(el("span", { "class": "dd-bad" }, v.status === "failed" ? "failed: " + (v.error || "") : (v.status || "unknown")));
          r.appendChild(td);
        });
        tb.appendChild(r);
      });
      tbl.appendChild(tb);
      var wrap = el("div", { "class": "dd-table-wrap" }); wrap.appendChild(tbl); root.appendChild(wrap);
      // reasoning side by side, per rubric · evaluator · replicate
      root.appendChild(el("h2", { id: "compare-reasoning" }, "Reasoning"));
      keys.forEach(function (k) {
        var d = el("details", { "class": "dd-compare-block" });
        d.appendChild(el("summary", {}, seen[k].rubric + " by " + seen[k].model + ", replicate " + seen[k].rep));
        var g = grid();
        es.forEach(function (e) {
          var v = byKey(e, k);
          g.appendChild(el("div", { "class": "dd-output dd-reasoning" }, v ? (v.text != null ? v.text : "(no response: " + (v.text_problem || v.error_detail || "unknown") + ")") : "(not evaluated)"));
        });
        d.appendChild(g);
        root.appendChild(d);
      });
      // prompts
      root.appendChild(el("h2", { id: "compare-prompts" }, "Prompts"));
      ["essay", "draft"].forEach(function (stage) {
        var d = el("details", { "class": "dd-compare-block" });
        d.appendChild(el("summary", {}, stage + " prompts"));
        var g = grid();
        es.forEach(function (e) { var x = e[stage]; g.appendChild(el("div", { "class": "dd-output" }, x && x.prompt != null ? x.prompt : "(no prompt recorded)")); });
        d.appendChild(g);
        root.appendChild(d);
      });
    }
  }

  // ---- blind rating: essays in a shuffled order, a rubric, a score and a note --------------
  // Kept in localStorage ("dd-ratings:<cohort>"), exported as the CSV `daydream ratings import`
  // reads. Only the essay's text is shown: nothing of its model, template, lineage or scores.
  function shuffled(ids) {
    var a = ids.slice();
    for (var i = a.length - 1; i > 0; i--) { var j = Math.floor(Math.random() * (i + 1)), x = a[i]; a[i] = a[j]; a[j] = x; }
    return a;
  }

  function csvCell(s) { s = String(s == null ? "" : s); return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; }

  function ratePage() {
    var root = document.getElementById("dd-rate"), src = document.getElementById("dd-rate-data");
    if (!root || !src) return;
    var data = JSON.parse(src.textContent), key = "dd-ratings:" + data.cohort, st;
    try { st = JSON.parse(window.localStorage.getItem(key) || "null"); } catch (e) { st = null; }
    if (!st || !st.order || st.order.length !== data.essays.length) st = { order: shuffled(data.essays), pos: 0, ratings: {}, rubric: data.rubrics[0].id };
    var save = function () { try { window.localStorage.setItem(key, JSON.stringify(st)); } catch (e) { /* not kept */ } };
    save();
    var rubric = function () { return data.rubrics.filter(function (r) { return r.id === st.rubric; })[0] || data.rubrics[0]; };

    var bar = el("div", { "class": "dd-rate-bar" });
    var sel = el("select", { id: "dd-rate-rubric", "aria-label": "Rubric" });
    data.rubrics.forEach(function (r) { sel.appendChild(el("option", { value: r.id }, r.name + " (" + r.min + "–" + r.max + ")")); });
    sel.value = rubric().id;
    var progress = el("span", { id: "dd-rate-progress", "class": "dd-meta" });
    var exp = el("button", { type: "button", id: "dd-rate-export" }, "Export ratings (CSV)");
    var forget = el("button", { type: "button", id: "dd-rate-forget" }, "Forget my ratings");
    bar.appendChild(el("label", { "for": "dd-rate-rubric" }, "Rubric ")); bar.appendChild(sel);
    bar.appendChild(progress); bar.appendChild(exp); bar.appendChild(forget);
    var rtext = el("details", { "class": "dd-rubric", id: "dd-rate-rubric-text", open: "" });
    var essayBox = el("div", { "class": "dd-output dd-rate-essay", id: "dd-rate-essay" });
    var form = el("form", { "class": "dd-rate-form", id: "dd-rate-form" });
    var scoreIn = el("input", { type: "number", step: "any", id: "dd-rate-score", required: "", "aria-label": "Score" });
    var note = el("textarea", { id: "dd-rate-note", rows: "3", placeholder: "Why this score (optional)", "aria-label": "Note" });
    var prev = el("button", { type: "button", id: "dd-rate-prev" }, "← previous");
    var submit = el("button", { type: "submit", id: "dd-rate-save" }, "Save and next →");
    var skip = el("button", { type: "button", id: "dd-rate-skip" }, "skip");
    var scaleLabel = el("label", { "for": "dd-rate-score" });
    form.appendChild(scaleLabel); form.appendChild(scoreIn); form.appendChild(note);
    form.appendChild(prev); form.appendChild(submit); form.appendChild(skip);
    [bar, rtext, el("h2", { id: "dd-rate-heading" }), essayBox, form].forEach(function (n) { root.appendChild(n); });

    function rkey(eid) { return eid + "|" + rubric().id; }
    function count() { var n = 0; for (var k in st.ratings) if (k.split("|")[1] === rubric().id) n++; return n; }
    function show() {
      var r = rubric(), eid = st.order[st.pos];
      rtext.textContent = "";
      rtext.appendChild(el("summary", {}, "Rubric: " + r.name + " (score " + r.min + "–" + r.max + ")"));
      rtext.appendChild(el("div", { "class": "dd-output" }, r.text || "(the rubric's text is not in the catalog)"));
      scoreIn.min = r.min; scoreIn.max = r.max;
      scaleLabel.textContent = "Score (" + r.min + "–" + r.max + ") ";
      document.getElementById("dd-rate-heading").textContent = "Essay " + (st.pos + 1) + " of " + st.order.length;
      progress.textContent = count() + " of " + st.order.length + " rated on this rubric";
      var done = st.ratings[rkey(eid)];
      scoreIn.value = done ? done.score : ""; note.value = done ? done.note : "";
      prev.disabled = st.pos === 0;
      essayBox.textContent = "Loading…";
      var put = function () {
        var d = window.DDESSAY && window.DDESSAY[eid];
        essayBox.textContent = d && d.essay && d.essay.text != null ? d.essay.text : "(this essay's text is not available)";
      };
      if (window.DDESSAY && window.DDESSAY[eid]) put();
      else {
        var s = document.createElement("script");
        s.src = "essays/" + encodeURIComponent(eid) + ".js";
        s.onload = put; s.onerror = put;
        document.body.appendChild(s);
      }
    }
    function move(d) { st.pos = Math.min(st.order.length - 1, Math.max(0, st.pos + d)); save(); show(); }
    sel.addEventListener("change", function () { st.rubric = sel.value; save(); show(); });
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var r = rubric(), v = Number(scoreIn.value);
      if (scoreIn.value === "" || isNaN(v) || v < r.min || v > r.max) { scoreIn.setCustomValidity("A score from " + r.min + " to " + r.max); scoreIn.reportValidity(); return; }
      scoreIn.setCustomValidity("");
      st.ratings[rkey(st.order[st.pos])] = { score: v, note: note.value, rated_at: new Date().toISOString() };
      save();
      if (st.pos < st.order.length - 1) move(1); else show();
    });
    prev.addEventListener("click", function () { move(-1); });
    skip.addEventListener("click", function () { move(1); });
    exp.addEventListener("click", function () {
      var lines = ["cohort_id,essay_gen_id,rubric,score,note,rated_at"];
      Object.keys(st.ratings).sort().forEach(function (k) {
        var bits = k.split("|"), r = st.ratings[k];
        lines.push([data.cohort, bits[0], bits[1], r.score, r.note, r.rated_at].map(csvCell).join(","));
      });
      var a = el("a", { download: "ratings-" + data.cohort + ".csv" });
      a.href = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
      document.body.appendChild(a); a.click(); a.remove();
    });
    forget.addEventListener("click", function () {
      st = { order: shuffled(data.essays), pos: 0, ratings: {}, rubric: data.rubrics[0].id };
      save(); sel.value = st.rubric; show();
    });
    show();
  }

  // what a script (or a test) may ask of the page
  window.daydream = { exportFigure: exportFigure };

  function init() {
    setupTables(); essaySequence(); markTarget(); search(); essayPagePick(); comparePage(); ratePage(); drawCharts();
    addPicks(document.querySelector(".rst-content") || document); tray();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
