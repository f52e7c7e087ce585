// Page-wide conveniences (issue 13): sortable tables and flash messages sent by HTMX actions.
(() => {
  "use strict";

  // ------------------------------------------------------------------ sortable tables
  // A table marked data-sortable gets a button in each header cell of its last header row; a cell's
  // data-sort (else its text) is the sort key, numeric when every key of the column is a number.
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  function keyOf(row, column) {
    const cell = row.cells[column];
    if (!cell) return "";
    return (cell.dataset.sort ?? cell.textContent).trim();
  }

  function sortBy(table, header, column) {
    const body = table.tBodies[0];
    if (!body) return;
    const ascending = header.getAttribute("aria-sort") !== "ascending";
    const rows = [...body.rows];
    const keys = rows.map((row) => keyOf(row, column));
    const numeric = keys.every((key) => key !== "" && !Number.isNaN(Number(key)));
    const order = rows.map((row, index) => ({ row, key: keys[index], index }));
    order.sort((a, b) => {
      const compared = numeric ? Number(a.key) - Number(b.key) : collator.compare(a.key, b.key);
      return (ascending ? compared : -compared) || a.index - b.index;
    });
    for (const other of header.parentElement.cells) other.removeAttribute("aria-sort");
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    body.append(...order.map((item) => item.row));
  }

  function makeSortable(table) {
    if (table.dataset.sortableReady) return;
    table.dataset.sortableReady = "1";
    const head = table.tHead;
    if (!head || !head.rows.length) return;
    const headerRow = head.rows[head.rows.length - 1];
    [...headerRow.cells].forEach((header, column) => {
      const label = header.textContent.trim();
      if (!label || header.querySelector(".sr-only")) return;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "sort-button";
      button.append(...header.childNodes);
      button.title = `Sort by ${label}`;
      header.append(button);
      button.addEventListener("click", () => sortBy(table, header, column));
    });
  }

  function enhance(root) {
    const scope = root instanceof Element || root instanceof Document ? root : document;
    if (scope instanceof Element && scope.matches("table[data-sortable]")) makeSortable(scope);
    scope.querySelectorAll("table[data-sortable]").forEach(makeSortable);
  }

  document.addEventListener("DOMContentLoaded", () => enhance(document));
  document.addEventListener("htmx:load", (event) => enhance(event.detail.elt));

  // ------------------------------------------------------------------ flash messages
  // In-place HTMX actions send HX-Trigger {"concord-flash": "message"}; redirects use a cookie instead
  // and the next page renders the message itself.
  document.addEventListener("concord-flash", (event) => {
    const message = event.detail && event.detail.value;
    if (message && window.concordToast) window.concordToast(message, "ok");
  });
})();
