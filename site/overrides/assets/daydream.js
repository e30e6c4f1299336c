/* daydream report site: draws the Plotly charts embedded as JSON and makes tables sortable.
   Offline and dependency-free (Plotly itself is served from this site, only on chart pages). */
(function () {
  "use strict";

  // Each chart is <div class="dd-chart" data-figure="ID"> plus <script type="application/json" id="ID">.
  function drawCharts() {
    var charts = document.querySelectorAll("div.dd-chart[data-figure]");
    for (var i = 0; i < charts.length; i++) {
      var el = charts[i];
      if (!window.Plotly) { el.textContent = "The chart library did not load."; continue; }
      var fig = JSON.parse(document.getElementById(el.getAttribute("data-figure")).textContent);
      window.Plotly.newPlot(el, fig.data || [], fig.layout || {},
        { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] });
    }
  }

  // Click a header of a table.dd-sortable to sort by it; cells may carry data-sort (raw value).
  function cellKey(row, idx) {
    var cell = row.cells[idx];
    if (!cell) return "";
    var v = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    return v;
  }

  function compare(a, b) {
    if (a === "" && b === "") return 0;
    if (a === "") return 1;           // blanks last, whatever the direction
    if (b === "") return -1;
    var x = Number(a), y = Number(b);
    if (!isNaN(x) && !isNaN(y)) return x - y;
    return a.localeCompare(b, undefined, { numeric: true, sensitivity: "base" });
  }

  function sortBy(table, th, idx) {
    var desc = th.getAttribute("aria-sort") === "ascending";
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) heads[i].removeAttribute("aria-sort");
    th.setAttribute("aria-sort", desc ? "descending" : "ascending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var keyed = rows.map(function (r, n) { return { row: r, key: cellKey(r, idx), n: n }; });
    keyed.sort(function (p, q) {
      if (p.key === "" || q.key === "") return compare(p.key, q.key) || p.n - q.n;
      return (desc ? -compare(p.key, q.key) : compare(p.key, q.key)) || p.n - q.n;
    });
    var frag = document.createDocumentFragment();
    keyed.forEach(function (k) { frag.appendChild(k.row); });
    body.appendChild(frag);
  }

  function makeSortable() {
    var tables = document.querySelectorAll("table.dd-sortable");
    Array.prototype.forEach.call(tables, function (table) {
      if (!table.tHead || !table.tBodies.length) return;
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, idx) {
        th.setAttribute("title", "Sort by " + th.textContent.trim());
        th.addEventListener("click", function () { sortBy(table, th, idx); });
      });
    });
  }

  function init() { makeSortable(); drawCharts(); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
