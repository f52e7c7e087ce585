// Page helpers without inline script (the Content-Security-Policy allows none): timestamps in the
// browser's time zone, "Back" links that go back in history, placeholders of plots until they load.
(() => {
  "use strict";

  const DATE_STYLE = { dateStyle: "medium", timeStyle: "short" };

  // <time class="local-time" datetime="ISO"> shows the moment in the reader's time zone.
  function localTimes(root) {
    for (const element of root.querySelectorAll("time.local-time[datetime]")) {
      const moment = new Date(element.getAttribute("datetime"));
      if (Number.isNaN(moment.getTime())) continue;
      const dateOnly = element.classList.contains("date-only");
      element.textContent = dateOnly ? moment.toLocaleDateString(undefined, { dateStyle: "medium" })
        : moment.toLocaleString(undefined, DATE_STYLE);
      element.title = moment.toISOString();
    }
  }

  // A link marked data-history-back goes back when there is a page to go back to, else follows its href.
  document.addEventListener("click", (event) => {
    const link = event.target instanceof Element ? event.target.closest("a[data-history-back]") : null;
    if (!link || history.length < 2) return;
    event.preventDefault();
    history.back();
  });

  // Plots show a placeholder (app/static/pages.css) until their image has loaded.
  function plotPlaceholders(root) {
    for (const image of root.querySelectorAll(".plots img")) {
      if (image.complete && image.naturalWidth) image.classList.add("loaded");
      else image.addEventListener("load", () => image.classList.add("loaded"), { once: true });
    }
  }

  function enhance(root) {
    localTimes(root);
    plotPlaceholders(root);
  }
  document.addEventListener("DOMContentLoaded", () => enhance(document));
  document.addEventListener("htmx:afterSettle", (event) => enhance(event.target));
})();
