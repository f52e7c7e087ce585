// Page-wide helpers: toasts for failed HTMX requests, and the session-expiry redirect.
(() => {
  "use strict";

  function toast(message, kind = "error") {
    const box = document.getElementById("toasts");
    if (!box) return;
    const item = document.createElement("div");
    item.className = `toast toast-${kind}`;
    item.setAttribute("role", "alert");
    item.textContent = message;
    const close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "×";
    close.addEventListener("click", () => item.remove());
    item.appendChild(close);
    box.appendChild(item);
    setTimeout(() => item.remove(), 8000);
  }
  window.concordToast = toast;

  document.addEventListener("htmx:responseError", (event) => {
    const xhr = event.detail.xhr;
    if (xhr.status === 401) {
      location.assign(`/login?next=${encodeURIComponent(location.pathname)}&expired=1`);
      return;
    }
    const holder = document.createElement("div");
    holder.innerHTML = xhr.responseText;
    toast(holder.textContent.trim() || `Request failed (${xhr.status})`);
  });
  document.addEventListener("htmx:sendError", () => toast("No connection to the server; try again."));

  // Upload forms marked data-upload-progress show a progress bar while htmx sends them
  // (here rather than in hx-on attributes: the Content-Security-Policy allows no inline script).
  function uploadBar(event) {
    const form = event.target instanceof Element ? event.target.closest("[data-upload-progress]") : null;
    return form ? form.querySelector("progress") : null;
  }
  document.addEventListener("htmx:beforeRequest", (event) => {
    const bar = uploadBar(event);
    if (!bar) return;
    bar.hidden = false;
    bar.value = 0;
  });
  document.addEventListener("htmx:xhr:progress", (event) => {
    const bar = uploadBar(event);
    if (bar) bar.value = event.detail.total ? (event.detail.loaded / event.detail.total) * 100 : 0;
  });
  document.addEventListener("htmx:afterRequest", (event) => {
    const bar = uploadBar(event);
    if (bar) bar.hidden = true;
  });

  // Uploads send the CSRF token in the X-CSRF-Token header (hx-headers on <body>), never in the form
  // body: the server checks it before reading the body. Files over the server's limit are not sent.
  document.addEventListener("htmx:confirm", (event) => {
    const form = event.target.closest("form[data-max-bytes]");
    if (!form) return;
    const limit = Number(form.dataset.maxBytes);
    const inputs = form.querySelectorAll("input[type=file]");
    const total = [...inputs].flatMap((input) => [...input.files]).reduce((sum, file) => sum + file.size, 0);
    if (total > limit) {
      event.preventDefault();
      toast(`These files are ${(total / 1048576).toFixed(1)} MiB; uploads are limited to ${(limit / 1048576).toFixed(1)} MiB.`);
    }
  });
})();
