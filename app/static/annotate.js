// Concord annotation workspace: tiles with pan and zoom, an SVG box overlay, edits sent at once.
// Every edit goes through one ordered queue to the JSON API with an idempotency key; failures are
// retried, then shown with a Retry button, never dropped silently. The overlay follows the server.
(() => {
  "use strict";

  const config = JSON.parse(document.getElementById("workspace-config").textContent);
  const csrf = document.body.dataset.csrf || "";
  const viewer = document.getElementById("viewer");
  const stage = document.getElementById("stage");
  const tiles = document.getElementById("tiles");
  const overlay = document.getElementById("overlay");
  const saveStatus = document.getElementById("save-status");
  const zoomStatus = document.getElementById("zoom-status");
  const errorBox = document.getElementById("error-box");
  const errorText = document.getElementById("error-text");
  const labelTotal = document.getElementById("label-total");
  const helpDialog = document.getElementById("help-dialog");
  const labelsToggle = document.getElementById("show-labels");
  const darkToggle = document.getElementById("dark-background");
  const workspaceEl = document.getElementById("workspace");
  const SVG = "http://www.w3.org/2000/svg";
  const W = config.width;
  const H = config.height;
  const modeQuery = `mode=${encodeURIComponent(config.mode)}`;
  const labelsByName = new Map(config.labels.map((label) => [label.name, label]));
  const labelsByKey = new Map(config.labels.map((label) => [label.key, label]));
  const RETRY_DELAYS_MS = [400, 1200, 3000];
  const CLICK_SLOP_PX = 4;

  // ------------------------------------------------------------------ state
  let nextLid = 1;
  const objects = new Map(); // lid -> {lid, id, label, x1, y1, x2, y2, version, deleted}
  let selected = null;
  let currentLabel = config.labels[0] ? config.labels[0].name : null;
  const undoStack = [];
  const view = { scale: 1, tx: 0, ty: 0 };
  let showLabels = true;
  let opened = false; // the open's answer arrived: edits are sent from then on
  let openError = null;
  let openAttempt = null; // resolves to whether the latest open succeeded

  function adopt(serverObjects) {
    const previous = selected !== null && objects.get(selected) ? objects.get(selected).id : null;
    objects.clear();
    selected = null;
    for (const item of serverObjects) {
      const lid = nextLid++;
      objects.set(lid, { lid, id: item.id, label: item.label, x1: item.x1, y1: item.y1, x2: item.x2, y2: item.y2,
        version: item.version, deleted: !!item.deleted });
      if (item.id === previous) selected = lid;
    }
  }

  // The open answers the server's objects; boxes drawn while it was on its way wait in the queue: keep them.
  function adoptOpened(serverObjects) {
    const unsaved = [...objects.values()].filter((obj) => obj.id === null);
    const kept = selected;
    adopt(serverObjects);
    for (const obj of unsaved) objects.set(obj.lid, obj);
    if (objects.has(kept)) selected = kept;
  }

  function fromServer(obj, answer) {
    // Only geometry, label, version and state: origins are never kept in the page. While a later edit
    // of the same object waits (queued, a keyboard move not sent yet, a drag), the page's geometry and
    // label are newer than this answer: keep them, take only the id and version.
    Object.assign(obj, { id: answer.id, version: answer.version });
    if (hasLocalChange(obj.lid)) return;
    Object.assign(obj, { label: answer.label, x1: answer.x1, y1: answer.y1, x2: answer.x2, y2: answer.y2,
      deleted: answer.deleted });
  }

  function hasLocalChange(lid) {
    return queue.slice(1).some((op) => op.lid === lid) || (nudgeStart !== null && nudgeStart.lid === lid) ||
      (gesture !== null && gesture.lid === lid);
  }

  const boxOf = (obj) => ({ label: obj.label, x1: obj.x1, y1: obj.y1, x2: obj.x2, y2: obj.y2 });

  // ------------------------------------------------------------------ requests
  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  class RequestFailed extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  async function call(method, url, body, key, keepalive = false) {
    const headers = { "Content-Type": "application/json", "X-CSRF-Token": csrf, Accept: "application/json" };
    if (key) headers["Idempotency-Key"] = key;
    const response = await fetch(config.api + url, {
      method, headers, credentials: "same-origin", keepalive,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) {
      const next = encodeURIComponent(location.pathname);
      location.assign(`/login?next=${next}&expired=1`);
      throw new RequestFailed(401, "session expired");
    }
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new RequestFailed(response.status, answer.detail || response.statusText);
    return answer;
  }

  const retriable = (error) => !(error instanceof RequestFailed) || error.status >= 500 || [408, 429].includes(error.status);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function callWithRetry(method, url, body, key) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await call(method, url, body, key);
      } catch (error) {
        if (!retriable(error) || attempt >= RETRY_DELAYS_MS.length) throw error;
        setStatus(`Connection problem, retrying (${attempt + 1})…`, "warn");
        await sleep(RETRY_DELAYS_MS[attempt]);
      }
    }
  }

  // ------------------------------------------------------------------ edit queue
  const queue = [];
  let running = false;
  let halted = null;
  let idleWaiters = [];

  function enqueue(op) {
    if (config.done) showDoneHint();
    op.key = newKey();
    op.clientTs = new Date().toISOString();
    queue.push(op);
    refreshStatus();
    pump();
  }

  async function pump() {
    if (running || halted || !opened) return;
    running = true;
    while (queue.length && !halted) {
      refreshStatus();
      const op = queue[0];
      try {
        await runOp(op);
        queue.shift();
      } catch (error) {
        await onFailure(op, error);
      }
    }
    running = false;
    refreshStatus();
    if (!halted) {
      idleWaiters.forEach((resolve) => resolve(true));
      idleWaiters = [];
    }
  }

  async function runOp(op) {
    const obj = objects.get(op.lid);
    if (!obj) return;
    if (op.kind === "create") {
      const answer = await callWithRetry("POST", `/images/${config.imageId}/annotations?${modeQuery}`,
        { ...op.box, client_ts: op.clientTs }, op.key);
      fromServer(obj, answer);
    } else {
      if (obj.id === null) throw new RequestFailed(409, "the object was never saved");
      const url = op.kind === "update" ? `/annotations/${obj.id}` : `/annotations/${obj.id}/${op.kind}`;
      const body = { version: obj.version, client_ts: op.clientTs, ...(op.kind === "update" ? op.change : {}) };
      const answer = await callWithRetry(op.kind === "update" ? "PATCH" : "POST", url, body, op.key);
      fromServer(obj, answer);
    }
    render();
  }

  async function onFailure(op, error) {
    if (error instanceof RequestFailed && error.status === 401) {
      halted = { op, error };
      return;
    }
    if (error instanceof RequestFailed && error.status < 500 && ![408, 429].includes(error.status)) {
      // The server refused (409 someone else's edit, 422, 404): show it and take the server's objects.
      const dropped = queue.length;
      queue.length = 0;
      undoStack.length = 0;
      const what = error.status === 409 ? "The objects of this image changed elsewhere" : `Not saved: ${error.message}`;
      toast(`${what}. Reloaded this image's objects${dropped > 1 ? ` (${dropped} pending edits were not applied)` : ""}.`);
      await reloadObjects();
      return;
    }
    halted = { op, error };
    errorText.textContent = `Edit not saved (${error.message || "no connection"}). Your edits are kept here.`;
    errorBox.hidden = false;
    refreshStatus();
  }

  function retryHalted() {
    halted = null;
    errorBox.hidden = true;
    if (!opened) return openImage();
    pump();
  }

  function whenSaved() {
    if (!queue.length && !running && !halted) return Promise.resolve(true);
    if (halted) return Promise.resolve(false);
    return new Promise((resolve) => idleWaiters.push(resolve));
  }

  async function reloadObjects() {
    try {
      adopt(await callWithRetry("GET", `/images/${config.imageId}/annotations?${modeQuery}`));
    } catch (error) {
      toast(`Could not reload the objects: ${error.message}`);
    }
    render();
  }

  function setStatus(text, state) {
    saveStatus.textContent = text;
    saveStatus.dataset.state = state;
  }

  // The indicator follows the real state only: "saved" means nothing is pending locally, in the queue
  // or in flight, and every request so far was acknowledged by the server.
  function refreshStatus() {
    if (halted) setStatus(`Not saved: ${queue.length} edit(s) waiting`, "error");
    else if (openError) setStatus("Could not open this image", "error");
    else if (running || queue.length) setStatus(`Saving… (${queue.length})`, "busy");
    else if (!opened) setStatus("Opening the image…", "busy");
    else if (nudgeStart || (gesture && gesture.active)) setStatus("Unsaved change", "dirty");
    else setStatus("All edits saved", "ok");
  }

  function toast(message) {
    if (window.concordToast) window.concordToast(message);
  }

  // ------------------------------------------------------------------ edits
  const editable = () => !config.readOnly;

  function createBox(box, label = currentLabel) {
    if (!editable() || !label) return;
    const lid = nextLid++;
    const obj = { lid, id: null, label, ...box, version: 0, deleted: false };
    objects.set(lid, obj);
    selected = lid;
    undoStack.push({ lid, kind: "create" });
    enqueue({ kind: "create", lid, box: { ...box, label } });
    render();
  }

  function updateBox(lid, change, recordUndo = true) {
    const obj = objects.get(lid);
    if (!obj || obj.deleted || !editable()) return;
    const before = boxOf(obj);
    const changed = Object.keys(change).some((key) => change[key] !== obj[key]);
    if (!changed) return;
    Object.assign(obj, change);
    if (recordUndo) undoStack.push({ lid, kind: "update", before });
    enqueue({ kind: "update", lid, change: { ...change } });
    render();
  }

  function setDeleted(lid, deleted, recordUndo = true) {
    const obj = objects.get(lid);
    if (!obj || obj.deleted === deleted || !editable()) return;
    obj.deleted = deleted;
    if (recordUndo) undoStack.push({ lid, kind: deleted ? "delete" : "restore" });
    if (deleted && selected === lid) selected = null;
    enqueue({ kind: deleted ? "delete" : "restore", lid });
    render();
  }

  function undo() {
    const entry = undoStack.pop();
    if (!entry) return toast("Nothing to undo.");
    if (entry.kind === "create") setDeleted(entry.lid, true, false);
    else if (entry.kind === "delete") setDeleted(entry.lid, false, false);
    else if (entry.kind === "restore") setDeleted(entry.lid, true, false);
    else updateBox(entry.lid, entry.before, false);
  }

  function relabelSelected(label) {
    if (selected === null) {
      currentLabel = label;
      renderLabels();
      return;
    }
    updateBox(selected, { label });
    currentLabel = label;
  }

  // ------------------------------------------------------------------ geometry
  const clamp = (value, low, high) => Math.min(Math.max(value, low), high);

  function toImage(clientX, clientY) {
    const rect = viewer.getBoundingClientRect();
    return { x: (clientX - rect.left - view.tx) / view.scale, y: (clientY - rect.top - view.ty) / view.scale };
  }

  function defaultBoxAt(x, y) {
    const w = Math.min(config.defaultBoxSize, W);
    const h = Math.min(config.defaultBoxSize, H);
    const x1 = clamp(Math.round(x - w / 2), 0, W - w);
    const y1 = clamp(Math.round(y - h / 2), 0, H - h);
    return { x1, y1, x2: x1 + w, y2: y1 + h };
  }

  function normalised(ax, ay, bx, by) {
    return {
      x1: clamp(Math.round(Math.min(ax, bx)), 0, W), y1: clamp(Math.round(Math.min(ay, by)), 0, H),
      x2: clamp(Math.round(Math.max(ax, bx)), 0, W), y2: clamp(Math.round(Math.max(ay, by)), 0, H),
    };
  }

  function moved(box, dx, dy) {
    const w = box.x2 - box.x1;
    const h = box.y2 - box.y1;
    const x1 = clamp(Math.round(box.x1 + dx), 0, W - w);
    const y1 = clamp(Math.round(box.y1 + dy), 0, H - h);
    return { x1, y1, x2: x1 + w, y2: y1 + h };
  }

  // ------------------------------------------------------------------ view: pan, zoom, tiles
  function fit() {
    const rect = viewer.getBoundingClientRect();
    view.scale = Math.min(rect.width / W, rect.height / H) * 0.98;
    view.tx = (rect.width - W * view.scale) / 2;
    view.ty = (rect.height - H * view.scale) / 2;
    applyView();
  }

  function zoomAt(factor, clientX, clientY) {
    const rect = viewer.getBoundingClientRect();
    const px = clientX - rect.left;
    const py = clientY - rect.top;
    const minScale = Math.min(rect.width / W, rect.height / H) / 4;
    const scale = clamp(view.scale * factor, minScale, 16);
    view.tx = px - ((px - view.tx) * scale) / view.scale;
    view.ty = py - ((py - view.ty) * scale) / view.scale;
    view.scale = scale;
    applyView();
  }

  function zoomCentre(factor) {
    const rect = viewer.getBoundingClientRect();
    zoomAt(factor, rect.left + rect.width / 2, rect.top + rect.height / 2);
  }

  function pan(dx, dy) {
    view.tx += dx;
    view.ty += dy;
    applyView();
  }

  // A minimap for large (tiled) regions: the whole image small, the visible part outlined; a click or
  // drag on it centres the view there.
  const MINIMAP_MIN_SIDE = 2048;
  const MINIMAP_SIDE = 160;
  const minimap = Math.max(W, H) >= MINIMAP_MIN_SIDE ? buildMinimap() : null;

  function buildMinimap() {
    const box = document.createElement("div");
    box.className = "minimap";
    box.id = "minimap";
    box.setAttribute("aria-hidden", "true");
    const ratio = MINIMAP_SIDE / Math.max(W, H);
    box.style.width = `${Math.round(W * ratio)}px`;
    box.style.height = `${Math.round(H * ratio)}px`;
    const picture = document.createElement("img");
    picture.alt = "";
    picture.draggable = false;
    picture.src = `${config.api}/images/${config.imageId}/thumbnail?max_side=256`;
    const frame = document.createElement("div");
    frame.className = "minimap-view";
    box.append(picture, frame);
    viewer.appendChild(box);
    let dragging = false;
    const centreAt = (event) => {
      const rect = box.getBoundingClientRect();
      const viewRect = viewer.getBoundingClientRect();
      const x = ((event.clientX - rect.left) / rect.width) * W;
      const y = ((event.clientY - rect.top) / rect.height) * H;
      view.tx = viewRect.width / 2 - x * view.scale;
      view.ty = viewRect.height / 2 - y * view.scale;
      applyView();
    };
    box.addEventListener("pointerdown", (event) => {
      event.stopPropagation();
      event.preventDefault();
      dragging = true;
      box.setPointerCapture(event.pointerId);
      centreAt(event);
    });
    box.addEventListener("pointermove", (event) => {
      event.stopPropagation();
      if (dragging) centreAt(event);
    });
    for (const name of ["pointerup", "pointercancel"]) {
      box.addEventListener(name, (event) => {
        event.stopPropagation();
        dragging = false;
      });
    }
    box.addEventListener("wheel", (event) => event.stopPropagation(), { passive: true });
    return { box, frame, ratio };
  }

  function drawMinimap() {
    if (!minimap) return;
    const rect = viewer.getBoundingClientRect();
    const x1 = clamp(-view.tx / view.scale, 0, W);
    const y1 = clamp(-view.ty / view.scale, 0, H);
    const x2 = clamp((rect.width - view.tx) / view.scale, 0, W);
    const y2 = clamp((rect.height - view.ty) / view.scale, 0, H);
    Object.assign(minimap.frame.style, {
      left: `${x1 * minimap.ratio}px`, top: `${y1 * minimap.ratio}px`,
      width: `${Math.max(2, (x2 - x1) * minimap.ratio)}px`, height: `${Math.max(2, (y2 - y1) * minimap.ratio)}px`,
    });
    minimap.box.dataset.view = [x1, y1, x2, y2].map(Math.round).join(",");
  }

  let tileTimer = null;
  function applyView() {
    stage.style.transform = `translate(${view.tx}px, ${view.ty}px) scale(${view.scale})`;
    zoomStatus.textContent = `zoom ${Math.round(view.scale * 100)} %`;
    drawMinimap();
    clearTimeout(tileTimer);
    tileTimer = setTimeout(loadTiles, 30);
    render();
  }

  function pickLevel() {
    let level = 0;
    config.levels.forEach(([lw], index) => {
      if (W / lw <= 1 / view.scale + 1e-9) level = index;
    });
    return level;
  }

  // Tiles come by the granted URL of the page (no database work per tile); shortly before the grant
  // expires the image is asked again for a fresh one, and meanwhile tiles use the plain authorised route.
  const grant = { url: config.tileUrl, expiresAt: config.tileUrlExpiresAt || 0, asking: false };
  const GRANT_MARGIN_S = 30;

  function plainTileSrc(key, size) {
    return `${config.api}/images/${config.imageId}/tiles/${key}?size=${size}`;
  }

  function tileSrc(key, size) {
    if (grant.url && Date.now() / 1000 < grant.expiresAt - GRANT_MARGIN_S) {
      const [level, col, row] = key.split("/");
      return `${grant.url.replace("{level}", level).replace("{col}", col).replace("{row}", row)}?size=${size}`;
    }
    renewGrant();
    return plainTileSrc(key, size);
  }

  async function renewGrant() {
    if (grant.asking || !config.tileUrl) return;
    grant.asking = true;
    try {
      const response = await fetch(`${config.api}/images/${config.imageId}`, { credentials: "same-origin" });
      if (response.ok) {
        const image = await response.json();
        if (image.tile_url) Object.assign(grant, { url: image.tile_url, expiresAt: image.tile_url_expires_at });
      }
    } catch (error) {
      // offline: tiles keep using the plain route until the next attempt
    } finally {
      grant.asking = false;
    }
  }

  function loadTiles() {
    const level = pickLevel();
    const [lw, lh] = config.levels[level];
    const sx = W / lw;
    const sy = H / lh;
    const size = config.tileSize;
    const rect = viewer.getBoundingClientRect();
    const left = Math.max(0, -view.tx / view.scale / sx);
    const top = Math.max(0, -view.ty / view.scale / sy);
    const right = Math.min(lw, (rect.width - view.tx) / view.scale / sx);
    const bottom = Math.min(lh, (rect.height - view.ty) / view.scale / sy);
    const wanted = new Set();
    for (let row = Math.floor(top / size); row * size < bottom; row++) {
      for (let col = Math.floor(left / size); col * size < right; col++) {
        const key = `${level}/${col}/${row}`;
        wanted.add(key);
        if (tiles.querySelector(`img[data-key="${key}"]`)) continue;
        const img = document.createElement("img");
        img.dataset.key = key;
        img.alt = "";
        img.draggable = false;
        img.src = tileSrc(key, size);
        // A grant another server refuses (no shared CONCORD_TILE_GRANT_SECRET): the plain route, once.
        img.addEventListener("error", () => {
          if (!img.dataset.plain) {
            img.dataset.plain = "1";
            img.src = plainTileSrc(key, size);
          }
        });
        img.style.left = `${col * size * sx}px`;
        img.style.top = `${row * size * sy}px`;
        // Inner tiles overlap their neighbours by one pixel so that no seam shows when scaled.
        const seamX = (col + 1) * size < lw ? 1 : 0;
        const seamY = (row + 1) * size < lh ? 1 : 0;
        img.style.width = `${(Math.min(size, lw - col * size) + seamX) * sx}px`;
        img.style.height = `${(Math.min(size, lh - row * size) + seamY) * sy}px`;
        tiles.appendChild(img);
      }
    }
    for (const img of [...tiles.children]) if (!wanted.has(img.dataset.key)) img.remove();
  }

  // ------------------------------------------------------------------ rendering
  function svgEl(name, attrs) {
    const el = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
    return el;
  }

  let preview = null;
  function render() {
    overlay.setAttribute("viewBox", `0 0 ${W} ${H}`);
    overlay.setAttribute("width", W);
    overlay.setAttribute("height", H);
    overlay.replaceChildren();
    const handle = 10 / view.scale;
    for (const obj of objects.values()) {
      if (obj.deleted) continue;
      const colour = (labelsByName.get(obj.label) || { colour: "#ffffff" }).colour;
      const isSelected = obj.lid === selected;
      const group = svgEl("g", { class: `box${isSelected ? " selected" : ""}${obj.id === null ? " pending" : ""}`, "data-lid": obj.lid,
        "data-id": obj.id === null ? "" : obj.id, "data-label": obj.label });
      group.appendChild(svgEl("rect", { class: "box-rect", x: obj.x1, y: obj.y1, width: obj.x2 - obj.x1,
        height: obj.y2 - obj.y1, stroke: colour, "data-lid": obj.lid, "vector-effect": "non-scaling-stroke" }));
      if (showLabels) {
        const above = obj.y1 - 4 / view.scale;
        const y = above < 12 / view.scale ? obj.y1 + 14 / view.scale : above; // inside when no room above
        const text = svgEl("text", { class: "box-label", x: obj.x1 + 2 / view.scale, y,
          "font-size": 12 / view.scale, "stroke-width": 3 / view.scale });
        text.textContent = obj.label;
        group.appendChild(text);
      }
      if (isSelected && editable()) {
        for (const [name, x, y] of [["nw", obj.x1, obj.y1], ["ne", obj.x2, obj.y1], ["sw", obj.x1, obj.y2], ["se", obj.x2, obj.y2]]) {
          group.appendChild(svgEl("rect", { class: `handle handle-${name}`, x: x - handle / 2, y: y - handle / 2,
            width: handle, height: handle, "data-lid": obj.lid, "data-handle": name, "vector-effect": "non-scaling-stroke" }));
        }
      }
      overlay.appendChild(group);
    }
    if (preview) {
      overlay.appendChild(svgEl("rect", { class: "preview", x: preview.x1, y: preview.y1, width: preview.x2 - preview.x1,
        height: preview.y2 - preview.y1, "vector-effect": "non-scaling-stroke" }));
    }
    renderLabels();
  }

  function renderLabels() {
    const counts = new Map();
    for (const obj of objects.values()) if (!obj.deleted) counts.set(obj.label, (counts.get(obj.label) || 0) + 1);
    const active = selected !== null && objects.get(selected) ? objects.get(selected).label : currentLabel;
    for (const button of document.querySelectorAll(".label-button")) {
      button.setAttribute("aria-pressed", String(button.dataset.label === active));
    }
    for (const count of document.querySelectorAll("[data-count-for]")) {
      count.textContent = counts.get(count.dataset.countFor) || 0;
    }
    const total = [...counts.values()].reduce((sum, n) => sum + n, 0);
    labelTotal.textContent = `${total} object${total === 1 ? "" : "s"} on this image`;
  }

  // ------------------------------------------------------------------ pointer
  let gesture = null;
  let spaceHeld = false;

  viewer.addEventListener("pointerdown", (event) => {
    viewer.focus({ preventScroll: true });
    markActive();
    const target = event.target;
    const point = toImage(event.clientX, event.clientY);
    if (event.button === 1 || (event.button === 0 && spaceHeld)) {
      gesture = { kind: "pan", lastX: event.clientX, lastY: event.clientY };
    } else if (event.button !== 0) {
      return;
    } else if (target.dataset && target.dataset.handle && editable()) {
      const obj = objects.get(Number(target.dataset.lid));
      const fixedX = target.dataset.handle.includes("w") ? obj.x2 : obj.x1;
      const fixedY = target.dataset.handle.includes("n") ? obj.y2 : obj.y1;
      gesture = { kind: "resize", lid: obj.lid, fixedX, fixedY, start: boxOf(obj) };
    } else if (target.dataset && target.dataset.lid) {
      const obj = objects.get(Number(target.dataset.lid));
      selected = obj.lid;
      gesture = { kind: "move", lid: obj.lid, startX: point.x, startY: point.y, start: boxOf(obj),
        clientX: event.clientX, clientY: event.clientY, active: false };
      render();
    } else {
      gesture = { kind: "draw", startX: point.x, startY: point.y, clientX: event.clientX, clientY: event.clientY, active: false };
    }
    viewer.setPointerCapture(event.pointerId);
    event.preventDefault();
  });

  viewer.addEventListener("pointermove", (event) => {
    if (!gesture) return;
    const point = toImage(event.clientX, event.clientY);
    const far = gesture.clientX !== undefined &&
      Math.hypot(event.clientX - gesture.clientX, event.clientY - gesture.clientY) > CLICK_SLOP_PX;
    if (gesture.kind === "pan") {
      pan(event.clientX - gesture.lastX, event.clientY - gesture.lastY);
      gesture.lastX = event.clientX;
      gesture.lastY = event.clientY;
    } else if (gesture.kind === "draw") {
      gesture.active = gesture.active || far;
      if (gesture.active && editable()) {
        preview = normalised(gesture.startX, gesture.startY, point.x, point.y);
        render();
      }
    } else if (gesture.kind === "move" && editable()) {
      gesture.active = gesture.active || far;
      if (gesture.active) {
        Object.assign(objects.get(gesture.lid), moved(gesture.start, point.x - gesture.startX, point.y - gesture.startY));
        render();
        refreshStatus();
      }
    } else if (gesture.kind === "resize") {
      gesture.active = true;
      Object.assign(objects.get(gesture.lid), normalised(gesture.fixedX, gesture.fixedY, point.x, point.y));
      render();
      refreshStatus();
    }
  });

  function endGesture(event) {
    if (!gesture) return;
    const done = gesture;
    gesture = null;
    preview = null;
    refreshStatus();
    if (viewer.hasPointerCapture(event.pointerId)) viewer.releasePointerCapture(event.pointerId);
    if (event.type === "pointercancel") return restore(done);
    const point = toImage(event.clientX, event.clientY);
    if (done.kind === "draw") {
      if (!done.active) {
        if (selected !== null) selected = null;
        createBox(defaultBoxAt(point.x, point.y));
      } else {
        const box = normalised(done.startX, done.startY, point.x, point.y);
        if (box.x2 - box.x1 >= 3 && box.y2 - box.y1 >= 3) createBox(box);
      }
    } else if (done.kind === "move" || done.kind === "resize") {
      const obj = objects.get(done.lid);
      const now = { x1: obj.x1, y1: obj.y1, x2: obj.x2, y2: obj.y2 };
      Object.assign(obj, done.start);
      const valid = now.x2 - now.x1 >= 2 && now.y2 - now.y1 >= 2;
      if (valid) updateBox(done.lid, now);
    }
    render();
  }

  function restore(done) {
    if (done.start) Object.assign(objects.get(done.lid), done.start);
    render();
  }

  viewer.addEventListener("pointerup", endGesture);
  viewer.addEventListener("pointercancel", endGesture);
  viewer.addEventListener("wheel", (event) => {
    event.preventDefault();
    markActive();
    zoomAt(Math.pow(1.0015, -event.deltaY), event.clientX, event.clientY);
  }, { passive: false });

  // ------------------------------------------------------------------ keyboard
  let nudgeTimer = null;
  let nudgeStart = null;

  // Arrow keys move (and Ctrl+arrows resize) the selected box locally; one edit is sent 400 ms after
  // the last key, shown as "Unsaved change" until then.
  function nudgeWith(change) {
    const obj = objects.get(selected);
    if (!obj || !editable()) return;
    if (nudgeStart && nudgeStart.lid !== obj.lid) commitNudge();
    if (!nudgeStart) nudgeStart = { lid: obj.lid, box: boxOf(obj) };
    Object.assign(obj, change(obj));
    render();
    refreshStatus();
    clearTimeout(nudgeTimer);
    nudgeTimer = setTimeout(commitNudge, 400);
  }

  const nudge = (dx, dy) => nudgeWith((obj) => moved(obj, dx, dy));

  function resizeBy(dw, dh) {
    nudgeWith((obj) => ({
      x2: clamp(obj.x2 + dw, obj.x1 + 2, W),
      y2: clamp(obj.y2 + dh, obj.y1 + 2, H),
    }));
  }

  function commitNudge() {
    clearTimeout(nudgeTimer);
    if (!nudgeStart) return;
    const { lid, box } = nudgeStart;
    nudgeStart = null;
    const obj = objects.get(lid);
    const now = { x1: obj.x1, y1: obj.y1, x2: obj.x2, y2: obj.y2 };
    Object.assign(obj, box);
    updateBox(lid, now);
    refreshStatus();
  }

  function cycleSelection(step) {
    const visible = [...objects.values()].filter((obj) => !obj.deleted);
    if (!visible.length) return;
    const index = visible.findIndex((obj) => obj.lid === selected);
    selected = visible[(index + step + visible.length) % visible.length].lid;
    render();
  }

  function boxAtCentre() {
    const rect = viewer.getBoundingClientRect();
    const point = toImage(rect.left + rect.width / 2, rect.top + rect.height / 2);
    createBox(defaultBoxAt(point.x, point.y));
  }

  document.addEventListener("keydown", (event) => {
    const tag = (event.target.tagName || "").toLowerCase();
    if (["input", "textarea", "select"].includes(tag) || event.altKey) return;
    if (helpDialog.open) return; // the dialog has the keys (Escape closes it)
    markActive();
    const key = event.key;
    const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if ((event.ctrlKey || event.metaKey) && key.toLowerCase() === "z") {
      event.preventDefault();
      commitNudge();
      return undo();
    }
    if (event.ctrlKey && arrows[key] && selected !== null) {
      event.preventDefault();
      const [dw, dh] = arrows[key];
      return resizeBy(dw * (event.shiftKey ? 10 : 1), dh * (event.shiftKey ? 10 : 1));
    }
    if (event.ctrlKey || event.metaKey) return;
    if (arrows[key] && (document.activeElement === viewer || selected !== null)) {
      event.preventDefault();
      const [dx, dy] = arrows[key];
      if (selected !== null) nudge(dx * (event.shiftKey ? 10 : 1), dy * (event.shiftKey ? 10 : 1));
      else pan(-dx * 60, -dy * 60);
      return;
    }
    if (labelsByKey.has(key)) return relabelSelected(labelsByKey.get(key).name);
    if (tag === "button" && (key === " " || key === "Enter")) return;
    const actions = {
      Delete: () => selected !== null && setDeleted(selected, true),
      Backspace: () => selected !== null && setDeleted(selected, true),
      Escape: () => { selected = null; render(); },
      n: () => go(config.nextUrl), N: () => go(config.nextUrl),
      p: () => go(config.prevUrl), P: () => go(config.prevUrl),
      d: () => markDone(), D: () => markDone(),
      b: () => boxAtCentre(), B: () => boxAtCentre(),
      "]": () => cycleSelection(1), "[": () => cycleSelection(-1),
      "+": () => zoomCentre(1.25), "=": () => zoomCentre(1.25), "-": () => zoomCentre(0.8), 0: () => fit(),
      "?": () => openHelp(),
      l: () => setShowLabels(!showLabels), L: () => setShowLabels(!showLabels),
    };
    if (key === " " && document.activeElement === viewer) {
      spaceHeld = true;
      event.preventDefault();
      return;
    }
    if (actions[key]) {
      event.preventDefault();
      actions[key]();
    }
  });
  document.addEventListener("keyup", (event) => {
    if (event.key === " ") spaceHeld = false;
  });

  for (const button of document.querySelectorAll(".label-button")) {
    button.addEventListener("click", () => relabelSelected(button.dataset.label));
  }

  // ------------------------------------------------------------------ view options and help
  function openHelp() {
    if (!helpDialog.open) helpDialog.showModal();
  }
  document.getElementById("help-button").addEventListener("click", openHelp);
  document.getElementById("help-close").addEventListener("click", () => helpDialog.close());
  helpDialog.addEventListener("close", () => viewer.focus({ preventScroll: true }));

  function remember(name, value) {
    try {
      localStorage.setItem(`concord.${name}`, value ? "1" : "0");
    } catch {
      // private mode: the choice lasts for this page only
    }
  }

  function remembered(name, fallback) {
    try {
      const value = localStorage.getItem(`concord.${name}`);
      return value === null ? fallback : value === "1";
    } catch {
      return fallback;
    }
  }

  function setShowLabels(on) {
    showLabels = on;
    labelsToggle.checked = on;
    remember("showLabels", on);
    render();
  }
  labelsToggle.addEventListener("change", () => setShowLabels(labelsToggle.checked));

  function setDark(on) {
    darkToggle.checked = on;
    document.body.classList.toggle("workspace-dark", on);
    workspaceEl.classList.toggle("dark-background", on);
    remember("darkBackground", on);
  }
  darkToggle.addEventListener("change", () => setDark(darkToggle.checked));
  document.getElementById("retry-button").addEventListener("click", retryHalted);

  // ------------------------------------------------------------------ navigation and done
  async function go(url) {
    if (!url) return toast("There is no image in that direction.");
    commitNudge();
    setStatus("Saving before leaving…", "busy");
    if (await whenSaved()) location.assign(url);
    else toast("Some edits are not saved yet; retry them before leaving.");
  }

  for (const id of ["prev-link", "next-link"]) {
    const link = document.getElementById(id);
    if (link) link.addEventListener("click", (event) => { event.preventDefault(); go(link.href); });
  }

  const doneButton = document.getElementById("done-button");
  async function markDone() {
    if (config.done || !editable()) return;
    if (!(await openAttempt)) return toast("This image could not be opened; retry first.");
    commitNudge();
    if (!(await whenSaved())) return toast("Some edits are not saved yet; retry them first.");
    try {
      await callWithRetry("POST", `/images/${config.imageId}/done?${modeQuery}`, undefined, null);
    } catch (error) {
      return toast(`Could not mark the image as done: ${error.message}`);
    }
    config.done = true;
    doneButton.disabled = true;
    doneButton.textContent = "Done ✓";
    const referenceButton = document.getElementById("reference-button");
    if (referenceButton) referenceButton.disabled = false;
    else afterDone();  // training mode stays: the reference is shown next
  }
  doneButton.addEventListener("click", markDone);

  // After an image is done: on to the next image not done yet, or, after the last one, offer to finish.
  function afterDone() {
    if (config.othersLeft > 0 && config.nextOpenUrl) return go(config.nextOpenUrl);
    const finishBox = document.getElementById("finish-box");
    if (!finishBox) return;
    finishBox.hidden = false;
    document.getElementById("finish-link").focus();
  }

  let doneHintShown = false;
  function showDoneHint() {
    if (doneHintShown) return;
    doneHintShown = true;
    const hint = document.getElementById("done-hint");
    if (hint) hint.hidden = false;
    if (window.concordToast) window.concordToast("This image is marked done; your changes are still saved.", "info");
  }

  window.addEventListener("beforeunload", (event) => {
    if (queue.length || running || halted || nudgeStart) event.preventDefault();
  });

  // ------------------------------------------------------------------ visits
  let visitId = null;
  let activeSinceBeat = true;
  let lastActivity = Date.now();

  function markActive() {
    activeSinceBeat = true;
    lastActivity = Date.now();
  }
  for (const name of ["pointermove", "pointerdown", "keydown", "wheel"]) {
    document.addEventListener(name, markActive, { passive: true });
  }

  async function openVisit() {
    for (let attempt = 0; attempt < 3 && visitId === null; attempt++) {
      try {
        visitId = (await call("POST", `/images/${config.imageId}/visits?${modeQuery}`, undefined, null)).id;
      } catch {
        await sleep(1000 * (attempt + 1));
      }
    }
  }

  function beat(kind, active, keepalive = false) {
    if (visitId === null) return;
    const body = { client_ts: new Date().toISOString(), active };
    activeSinceBeat = false;
    call("POST", `/visits/${visitId}/${kind}`, body, null, keepalive).catch(() => {});
  }

  setInterval(() => {
    if (document.visibilityState === "visible") beat("heartbeat", activeSinceBeat);
  }, config.heartbeatSeconds * 1000);

  document.addEventListener("visibilitychange", () => {
    // Leaving: count up to now if active; coming back: restart the clock without counting the absence.
    if (document.visibilityState === "hidden") beat("heartbeat", activeSinceBeat, true);
    else beat("heartbeat", false);
  });

  window.addEventListener("pagehide", () => {
    commitNudge();
    beat("close", activeSinceBeat, true);
    visitId = null;
  });

  // ------------------------------------------------------------------ open
  // The page changes nothing on the server. Opening the image is a write (its first open records the
  // first view and, in aided mode, copies the suggestions into the expert's objects), so the objects
  // shown are the open's answer; the visit starts after it, and queued edits are sent from then on.
  function openImage() {
    openAttempt = sendOpen();
    return openAttempt;
  }

  async function sendOpen() {
    openError = null;
    refreshStatus();
    try {
      adoptOpened(await callWithRetry("POST", `/images/${config.imageId}/open?${modeQuery}`, undefined, null));
    } catch (error) {
      openError = error;
      errorText.textContent = `Could not open this image (${error.message || "no connection"}).`;
      errorBox.hidden = false;
      refreshStatus();
      return false;
    }
    opened = true;
    render();
    refreshStatus();
    pump();
    openVisit();
    return true;
  }

  // ------------------------------------------------------------------ start
  showLabels = remembered("showLabels", true);
  labelsToggle.checked = showLabels;
  setDark(remembered("darkBackground", false));
  window.addEventListener("resize", () => applyView());
  fit();
  openImage();
  window.concordWorkspace = { objects, whenSaved, view };
})();
