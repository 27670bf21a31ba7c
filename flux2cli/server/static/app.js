// flux2 serve: the web UI. No build step, no dependencies; talks to the same REST API.
// Everything a user or the server wrote is put on the page with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const ACCEPTED_TYPES = ["image/png", "image/jpeg", "image/webp"];
const MAX_UPLOAD_BYTES = 20 * 1024 * 1024;
const KEY_STORAGE = "flux2-api-key";
const HISTORY_PAGE = 24;

const state = {
  apiKey: sessionStorage.getItem(KEY_STORAGE) || "",
  jobId: null,
  image: null, // data URL of the reference image
  imageSize: null, // [width, height] of the reference image, once it has loaded
  shown: new Set(), // file names of the cards on the page
  historyLoaded: false,
  olderThan: null, // GET /history's `next`: the page after the cards shown
  loras: null, // name -> GET /loras entry, once loaded: the LoRAs this server offers
};

const SIDES = ["left", "top", "right", "bottom"];

class UserError extends Error {}

// -- talking to the server -----------------------------------------------------

function withKey(headers = {}) {
  return state.apiKey ? { ...headers, "X-API-Key": state.apiKey } : headers;
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: withKey(options.headers), cache: "no-store" });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new UserError("The server cannot be reached. Is `flux2 serve` still running?");
  }
  if (response.status === 401) {
    $("key-row").hidden = false;
    $("api-key").focus();
    throw new UserError(state.apiKey ? "The API key was not accepted. Check it and try again."
                                     : "This server needs an API key. Enter it and try again.");
  }
  return response;
}

// api(), then the server's own words as a UserError unless the answer is the expected one.
async function apiExpect(path, options = {}, status = null) {
  const response = await api(path, options);
  if (status === null ? !response.ok : response.status !== status) throw new UserError(await errorMessage(response));
  return response;
}

// Seeds can exceed what a JavaScript number holds exactly (2^53): every "seed" value is read
// as the string of its digits. Strings are matched whole, so a prompt's text is never touched.
const SEED_OR_STRING = /("(?:[^"\\]|\\.)*")(\s*:\s*)(\d+)|"(?:[^"\\]|\\.)*"/g;

function parseJSON(text) {
  return JSON.parse(text.replace(SEED_OR_STRING, (match, key, colon, digits) =>
    key === '"seed"' ? `${key}${colon}"${digits}"` : match));
}

async function errorMessage(response) {
  try {
    const body = parseJSON(await response.text());
    if (body && typeof body.error === "string" && body.error) return body.error;
  } catch (_) { /* not JSON */ }
  return `The server answered ${response.status} ${response.statusText}.`;
}

// Server-Sent Events over fetch, so the API key header can travel with the request.
async function* serverEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer = (buffer + value).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) !== -1) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        let text = colon === -1 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "event") event = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) yield { event, data: parseJSON(data.join("\n")) };
    }
  }
}

// -- the page ----------------------------------------------------------------------

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function setBusy(busy) {
  $("generate").disabled = busy;
  $("generate").textContent = busy ? "Generating…" : "Generate";
  $("cancel").hidden = !busy;
  $("cancel").disabled = false;
  if (busy) $("progress-box").hidden = false;
}

function setProgress(text, fraction) {
  $("progress-box").hidden = false;
  $("progress-text").textContent = text;
  const bar = $("progress");
  if (fraction === null) bar.removeAttribute("value");
  else bar.value = fraction;
}

// The image as it forms, under the bar: a bad one can be cancelled after a few steps.
function showPreview(dataUrl) {
  const forming = $("forming");
  forming.src = dataUrl;
  forming.hidden = false;
}

function hidePreview() {
  const forming = $("forming");
  forming.hidden = true;
  forming.removeAttribute("src");
}

async function loadModelInfo() {
  try {
    const response = await apiExpect("/model-info");
    const info = await response.json();
    $("model").textContent = info.description || info.model;
  } catch (error) {
    $("model").textContent = "model unknown";
    if (error instanceof UserError) showError(error.message);
  }
}

function requestBody() {
  const prompt = $("prompt").value.trim();
  if (!prompt) throw new UserError("Write a prompt first: describe the image to generate.");
  const body = {
    prompt,
    orientation: $("orientation").value,
    size: $("size").value,
    batch: Number($("batch").value),
  };
  const steps = $("steps");
  if (steps.validity.badInput) throw new UserError("Steps must be a whole number.");
  if (steps.value !== "") body.steps = Number(steps.value);
  // Always the chosen list, even empty: naming none would get the server's defaults instead.
  if (state.loras && state.loras.size) body.loras = chosenLoras();
  if (state.image) {
    body.input_image = state.image;
    body.strength = Number($("strength").value);
    const mask = maskDataUrl();
    const expand = extendValues();
    if (mask) body.mask_image = mask;
    if (expand) body.expand = expand;
    if (mask || expand) { // a masked edit has the reference's (grown) size: asking for another is ignored
      delete body.orientation;
      delete body.size;
    }
  }
  let json = JSON.stringify(body);
  const seed = $("seed").value.trim();
  if (seed) {
    if (!/^\d+$/.test(seed)) throw new UserError("The seed must be a whole number (0 or more), or empty for a random one.");
    json = `${json.slice(0, -1)},"seed":${seed.replace(/^0+(?=\d)/, "")}}`; // digits verbatim, no rounding
  }
  return { json, prompt, settings: { orientation: body.orientation, size: body.size, steps: body.steps,
                                    batch: body.batch, loras: body.loras } };
}

async function generate(event) {
  event.preventDefault();
  if (state.jobId) return;
  clearError();
  let request;
  try {
    request = requestBody();
  } catch (error) {
    showError(error.message);
    return;
  }
  setBusy(true);
  setProgress("Sending…", null);
  try {
    const response = await apiExpect("/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: request.json,
    }, 202);
    const job = await response.json();
    state.jobId = job.id;
    await followJob(job.id, request);
  } catch (error) {
    showError(error instanceof UserError ? error.message : `Something went wrong: ${error.message}`);
    $("progress-box").hidden = true;
  } finally {
    state.jobId = null;
    setBusy(false);
  }
}

async function followJob(id, request) {
  const response = await apiExpect(`/jobs/${encodeURIComponent(id)}/events`);
  for await (const { event, data } of serverEvents(response)) {
    if (event === "queued") {
      setProgress(data.position > 1 ? `Waiting: ${ordinal(data.position)} in line` : "Waiting: next in line", null);
    } else if (event === "started") {
      setProgress("Encoding the prompt…", null);
    } else if (event === "step") {
      const images = data.batch > 1 ? ` · ${data.batch} images` : "";
      setProgress(`Step ${data.step} of ${data.total_steps}${images}`, data.step / data.total_steps);
    } else if (event === "preview") {
      if (data.image) showPreview(data.image);
    } else if (event === "done") {
      hidePreview();
      setProgress(`Done in ${data.result.generation_time.toFixed(2)} s`, 1);
      await showResults(data.result, request);
      return;
    } else if (event === "error") {
      hidePreview();
      if (data.state === "cancelled") {
        setProgress("Cancelled.", 0);
        return;
      }
      throw new UserError(data.error);
    }
  }
  // The stream ended early (a dropped connection): ask for the job's final state.
  const final = await apiExpect(`/jobs/${encodeURIComponent(id)}`);
  const job = parseJSON(await final.text());
  if (job.state === "done") return showResults(job.result, request);
  throw new UserError(job.error || "The connection to the server was lost during the generation.");
}

// 2 -> "2nd", 11 -> "11th", 23 -> "23rd": a job's place in the queue (1 = next to run).
function ordinal(n) {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? "th" : ({ 1: "st", 2: "nd", 3: "rd" })[n % 10] || "th";
  return `${n}${suffix}`;
}

async function cancelJob() {
  if (!state.jobId) return;
  $("cancel").disabled = true;
  setProgress("Cancelling…", null);
  try {
    await api(`/jobs/${encodeURIComponent(state.jobId)}`, { method: "DELETE" });
  } catch (error) {
    showError(error.message);
  }
}

function formatTimings(timings) {
  return ["encoding", "diffusion", "save", "total"]
    .filter((name) => typeof timings[name] === "number")
    .map((name) => `${name} ${timings[name].toFixed(2)} s`)
    .join(" · ");
}

async function showResults(result, request) {
  const cards = await Promise.all(result.images.map((image) => loadCard(image, request)));
  const fresh = cards.filter((card) => !state.shown.has(card.dataset.filename));
  for (const card of fresh) state.shown.add(card.dataset.filename);
  $("empty").hidden = true;
  $("gallery").prepend(...fresh);
  // On a phone the gallery is below the form: bring the new image to the eye.
  if (fresh.length && window.matchMedia("(max-width: 760px)").matches) {
    const still = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    fresh[0].scrollIntoView({ block: "start", behavior: still ? "auto" : "smooth" });
  }
}

async function loadCard(image, request) {
  const response = await apiExpect(`/images/${encodeURIComponent(image.filename)}`);
  return makeCard(image, await response.blob(), request);
}

// -- the gallery of earlier images: GET /history, newest first, a page at a time ---------

async function loadHistory() {
  const more = $("older");
  more.disabled = true;
  $("gallery").setAttribute("aria-busy", "true");
  try {
    const query = state.olderThan ? `&before=${encodeURIComponent(state.olderThan)}` : "";
    const response = await apiExpect(`/history?limit=${HISTORY_PAGE}${query}`);
    const page = parseJSON(await response.text());
    const cards = await Promise.all(page.images.map((image) =>
      loadCard(image, { prompt: image.prompt, settings: image.settings }).catch(() => null)));
    const fresh = cards.filter((card) => card && !state.shown.has(card.dataset.filename));
    for (const card of fresh) state.shown.add(card.dataset.filename);
    $("gallery").append(...fresh);
    if (state.shown.size) $("empty").hidden = true;
    state.olderThan = page.next;
    state.historyLoaded = true;
  } catch (error) {
    if (error instanceof UserError && state.historyLoaded) showError(error.message);
    // On open, the model-info call has already said what is wrong (no key, no server).
  } finally {
    more.hidden = !state.olderThan;
    more.disabled = false;
    $("gallery").removeAttribute("aria-busy"); // busy while a page of the history loads (and on open)
  }
}

function makeCard(image, blob, request) {
  const prompt = request.prompt;
  const url = URL.createObjectURL(blob);
  // importNode, not cloneNode: nodes of the inert template document would never load their image.
  const card = document.importNode($("card-template").content.firstElementChild, true);
  card.dataset.filename = image.filename;
  const picture = card.querySelector(".image");
  card.querySelector(".prompt").textContent = prompt;
  picture.alt = prompt;
  card.querySelector(".image-link").href = url;
  const seed = card.querySelector(".seed");
  seed.textContent = image.seed;
  seed.addEventListener("click", () => { $("seed").value = image.seed; $("prompt").focus(); });
  card.querySelector(".reuse").addEventListener("click", async () => {
    // What the image itself records wins: it holds the steps and size the server really used,
    // and its own prompt, in which braces are text (escaped, or they would be alternatives again).
    const stored = await storedSettings(blob).catch(() => null);
    if (stored && typeof stored.prompt === "string") stored.prompt = stored.prompt.replace(/[{}]/g, "\\$&");
    useSettings({ ...request.settings, prompt, seed: image.seed, ...(stored || {}) });
  });
  // A prompt with alternatives ("a {red|blue} circle") made one image per prompt: show each its own.
  storedSettings(blob).then((stored) => {
    if (stored && typeof stored.prompt === "string") {
      card.querySelector(".prompt").textContent = picture.alt = stored.prompt;
    }
    const loras = (stored && Array.isArray(stored.loras)) ? stored.loras : [];
    if (loras.length) {
      card.querySelector(".loras-used").textContent = loras.map((lora) => `${lora.name}:${lora.scale}`).join(" · ");
      card.querySelector(".lora-fact").hidden = false;
    }
  }).catch(() => {});
  card.querySelector(".timings").textContent = formatTimings(image.timings);
  const download = card.querySelector(".download");
  download.href = url;
  download.download = image.filename;
  download.textContent = `Download ${image.filename}`;
  return new Promise((resolve) => {
    picture.addEventListener("load", () => {
      card.querySelector(".size").textContent = `${picture.naturalWidth} × ${picture.naturalHeight}`;
      if (picture.naturalWidth < 256) picture.classList.add("pixelated");
      resolve(card);
    }, { once: true });
    picture.addEventListener("error", () => resolve(card), { once: true });
    picture.src = url;
  });
}

// -- "use these settings": read back what an image records ------------------------------

const PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

// Our PNGs carry their request as JSON in a "flux2" text chunk: tEXt, or iTXt when the
// prompt is not Latin-1 (see pipeline/output.py). Returns null when there is none.
async function storedSettings(blob) {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  if (!PNG_SIGNATURE.every((byte, i) => bytes[i] === byte)) return null;
  const view = new DataView(bytes.buffer);
  for (let at = 8; at + 12 <= bytes.length;) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    if (type === "IEND" || type === "IDAT") break; // text chunks we write come before the pixels
    if (type === "tEXt" || type === "iTXt") {
      const text = await chunkText(type, bytes.subarray(at + 8, at + 8 + length), "flux2");
      if (text !== null) return parseJSON(text);
    }
    at += 12 + length;
  }
  return null;
}

async function chunkText(type, data, keyword) {
  const nul = data.indexOf(0);
  if (nul < 0 || new TextDecoder("latin1").decode(data.subarray(0, nul)) !== keyword) return null;
  if (type === "tEXt") return new TextDecoder("latin1").decode(data.subarray(nul + 1));
  const compressed = data[nul + 1] === 1;
  let rest = data.subarray(nul + 3);
  rest = rest.subarray(rest.indexOf(0) + 1); // language tag
  rest = rest.subarray(rest.indexOf(0) + 1); // translated keyword
  if (compressed) {
    const stream = new Blob([rest]).stream().pipeThrough(new DecompressionStream("deflate"));
    rest = new Uint8Array(await new Response(stream).arrayBuffer());
  }
  return new TextDecoder().decode(rest);
}

function selectIfOffered(id, value) {
  const select = $(id);
  if (value && [...select.options].some((option) => option.value === value)) select.value = value;
}

// Every setting the form has a control for; the strength applies once a reference image is chosen.
function useSettings(settings) {
  clearError();
  $("prompt").value = settings.prompt;
  selectIfOffered("orientation", settings.orientation);
  selectIfOffered("size", settings.size);
  selectIfOffered("batch", String(settings.batch ?? 1));
  $("steps").value = settings.steps ?? "";
  $("seed").value = settings.seed ?? "";
  if (typeof settings.strength === "number") {
    $("strength").value = settings.strength;
    $("strength-value").textContent = Number($("strength").value).toFixed(2);
  }
  if (settings.loras !== undefined) restoreLoras(settings.loras || []); // null: the image used none
  $("prompt").focus();
}

// -- LoRAs: those GET /loras offers, each with a scale ----------------------------------
// The list in the form is what the request names, exactly: it starts as the server's defaults,
// and an emptied list asks for none.

function loraKind(entry) {
  if (entry.error) return "unreadable";
  return entry.rank === null || entry.rank === undefined ? entry.family : `${entry.family}, rank ${entry.rank}`;
}

async function loadLoras() {
  let offer;
  try {
    offer = await (await apiExpect("/loras")).json();
  } catch (_) {
    return; // an older server, or no key yet: the form simply has no LoRA control
  }
  state.loras = new Map(offer.loras.map((entry) => [entry.name, entry]));
  $("lora-pick").replaceChildren(...offer.loras.map((entry) => {
    const option = new Option(`${entry.name} · ${loraKind(entry)}`, entry.name);
    option.title = entry.error || `${entry.family} · rank ${entry.rank ?? "?"} · ${entry.format ?? "unknown format"}`;
    option.dataset.unreadable = entry.error ? "1" : "";
    return option;
  }));
  $("lora-list").replaceChildren();
  for (const lora of offer.defaults) if (state.loras.has(lora.name)) addLora(lora.name, lora.scale);
  $("lora-row").hidden = state.loras.size === 0;
  syncLoras();
}

function chosenRows() {
  return [...$("lora-list").children];
}

function addLora(name, scale = 1) {
  const row = document.importNode($("lora-template").content.firstElementChild, true);
  row.dataset.name = name;
  row.querySelector(".lora-name").textContent = name;
  row.querySelector(".lora-kind").textContent = loraKind(state.loras.get(name));
  const input = row.querySelector(".scale");
  input.value = String(scale ?? 1);
  input.setAttribute("aria-label", `Scale of ${name}`);
  const remove = row.querySelector(".remove");
  remove.setAttribute("aria-label", `Remove ${name}`);
  remove.addEventListener("click", () => {
    // Keyboard users keep their place: focus moves to the next row's Remove, or to the picker.
    const next = row.nextElementSibling || row.previousElementSibling;
    row.remove();
    syncLoras();
    (next ? next.querySelector(".remove") : $("lora-pick")).focus();
  });
  $("lora-list").append(row);
  return row;
}

// A LoRA is chosen at most once: its option is disabled while it is in the list.
function syncLoras() {
  const chosen = new Set(chosenRows().map((row) => row.dataset.name));
  const pick = $("lora-pick");
  for (const option of pick.options) option.disabled = chosen.has(option.value) || option.dataset.unreadable === "1";
  if (pick.selectedOptions[0]?.disabled !== false) {
    const free = [...pick.options].find((option) => !option.disabled);
    pick.value = free ? free.value : "";
  }
  $("lora-adder").hidden = !pick.value; // every offered LoRA is in the list already
  $("lora-none").hidden = chosen.size > 0;
}

function chosenLoras() {
  return chosenRows().map((row) => {
    const input = row.querySelector(".scale");
    const { badInput, rangeUnderflow, rangeOverflow } = input.validity;
    if (badInput || rangeUnderflow || rangeOverflow || input.value.trim() === "") {
      throw new UserError(`The scale of LoRA ${row.dataset.name} must be a number from ${input.min} to ${input.max}.`);
    }
    return { name: row.dataset.name, scale: Number(input.value) };
  });
}

// "Use these settings": the image's LoRAs, those this server still offers; the others are named.
function restoreLoras(loras) {
  if (!state.loras) return;
  $("lora-list").replaceChildren();
  const missing = [];
  for (const lora of loras) {
    if (state.loras.has(lora.name)) addLora(lora.name, lora.scale);
    else missing.push(lora.name);
  }
  syncLoras();
  const note = $("lora-note");
  note.textContent = missing.length ? `Left out, not offered by this server: ${missing.join(", ")}.` : "";
  note.hidden = !missing.length;
}

function wireLoras() {
  $("lora-add").addEventListener("click", () => {
    const name = $("lora-pick").value;
    if (!name) return;
    const row = addLora(name);
    syncLoras();
    row.querySelector(".scale").focus();
  });
}

// -- the reference image -------------------------------------------------------------

function setReference(file) {
  clearError();
  if (!ACCEPTED_TYPES.includes(file.type)) {
    showError("The reference image must be a PNG, JPEG or WebP file.");
    return;
  }
  if (file.size > MAX_UPLOAD_BYTES) {
    showError(`The reference image is ${(file.size / 1048576).toFixed(1)} MB; the limit is 20 MB.`);
    return;
  }
  const reader = new FileReader();
  reader.addEventListener("load", () => {
    state.image = reader.result;
    $("preview").src = reader.result;
    $("preview").hidden = false;
    $("clear-image").hidden = false;
    $("strength-row").hidden = false;
    $("drop").classList.add("has-image");
    loadMaskBase(reader.result);
  });
  reader.addEventListener("error", () => showError("The reference image could not be read."));
  reader.readAsDataURL(file);
}

function clearReference(event) {
  if (event) event.stopPropagation();
  state.image = null;
  $("file").value = "";
  $("preview").removeAttribute("src");
  $("preview").hidden = true;
  $("clear-image").hidden = true;
  $("strength-row").hidden = true;
  $("drop").classList.remove("has-image");
  resetMask();
}

function wireReference() {
  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      $("file").click();
    }
  });
  $("file").addEventListener("change", () => { if ($("file").files[0]) setReference($("file").files[0]); });
  $("clear-image").addEventListener("click", clearReference);
  // Dropping anywhere on the page must not navigate away from it.
  for (const name of ["dragover", "drop"]) document.addEventListener(name, (event) => event.preventDefault());
  drop.addEventListener("dragover", () => drop.classList.add("dragging"));
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    drop.classList.remove("dragging");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) setReference(file);
  });
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData ? event.clipboardData.files : [])].find((f) => f.type.startsWith("image/"));
    if (file) setReference(file);
  });
  $("strength").addEventListener("input", () => {
    $("strength-value").textContent = Number($("strength").value).toFixed(2);
  });
}

// -- the mask and the extension ---------------------------------------------------------
// The canvas holds the mask at the reference image's own size: painted pixels are opaque
// white, kept ones transparent, so CSS shows it as a translucent overlay and the alpha is
// the mask's grey value (antialiased brush edges become soft, partial edges).

const brush = { down: false, last: null, erase: false };

function maskContext() {
  return $("mask-canvas").getContext("2d", { willReadFrequently: true });
}

function loadMaskBase(dataUrl) {
  resetMask();
  const base = $("mask-base");
  base.addEventListener("load", () => {
    const [width, height] = [base.naturalWidth, base.naturalHeight];
    state.imageSize = [width, height];
    const canvas = $("mask-canvas");
    canvas.width = width; // also clears it
    canvas.height = height;
    // The stage has the image's shape and at most 320 px of height, so the canvas lies exactly on it.
    $("mask-stage").style.aspectRatio = `${width} / ${height}`;
    $("mask-stage").style.width = `min(100%, ${Math.round(320 * width / height)}px)`;
    base.classList.toggle("pixelated", width < 256);
    canvas.classList.toggle("pixelated", width < 256);
    $("mask-row").hidden = false;
    $("extend-row").hidden = false;
    showBrushSize();
    showExtendSize();
  }, { once: true });
  base.src = dataUrl;
}

function resetMask() {
  state.imageSize = null;
  brush.down = false;
  brush.last = null;
  const canvas = $("mask-canvas");
  canvas.width = 1;
  canvas.height = 1;
  $("mask-base").removeAttribute("src");
  $("mask-row").hidden = true;
  $("extend-row").hidden = true;
  for (const side of ["all", ...SIDES]) $(`extend-${side}`).value = "";
  setErase(false);
  showMaskState(false);
}

// The brush is a share of the image's longer side, so it feels the same on any image size.
function brushDiameter() {
  const canvas = $("mask-canvas");
  return Math.max(1, Math.round(Number($("brush").value) / 100 * Math.max(canvas.width, canvas.height)));
}

function showBrushSize() {
  $("brush-value").textContent = `${brushDiameter()} px`;
}

function setErase(on) {
  brush.erase = on;
  $("mask-erase").setAttribute("aria-pressed", String(on));
  $("mask-erase").classList.toggle("on", on);
}

function showMaskState(painted) {
  $("mask-state").textContent = painted ? "· painted areas will be regenerated" : "(paint what to regenerate)";
}

function maskPainted() {
  const canvas = $("mask-canvas");
  if (!state.imageSize) return false;
  const pixels = maskContext().getImageData(0, 0, canvas.width, canvas.height).data;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) return true;
  return false;
}

function canvasPoint(event) {
  const canvas = $("mask-canvas");
  const box = canvas.getBoundingClientRect();
  return { x: (event.clientX - box.left) * canvas.width / box.width,
           y: (event.clientY - box.top) * canvas.height / box.height };
}

function paintTo(point) {
  const context = maskContext();
  const size = brushDiameter();
  context.globalCompositeOperation = brush.erase ? "destination-out" : "source-over";
  context.fillStyle = context.strokeStyle = "#fff";
  context.lineWidth = size;
  context.lineCap = context.lineJoin = "round";
  if (brush.last) {
    context.beginPath();
    context.moveTo(brush.last.x, brush.last.y);
    context.lineTo(point.x, point.y);
    context.stroke();
  } else { // a click or a tap paints a dot (a zero-length line draws nothing)
    context.beginPath();
    context.arc(point.x, point.y, size / 2, 0, 2 * Math.PI);
    context.fill();
  }
  brush.last = point;
}

function invertMask() {
  const canvas = $("mask-canvas");
  const context = maskContext();
  const image = context.getImageData(0, 0, canvas.width, canvas.height);
  const pixels = image.data;
  for (let i = 0; i < pixels.length; i += 4) {
    pixels[i] = pixels[i + 1] = pixels[i + 2] = 255;
    pixels[i + 3] = 255 - pixels[i + 3];
  }
  context.putImageData(image, 0, 0);
  showMaskState(maskPainted());
}

// The mask as the server takes it: a PNG at the reference's size, grey = the painted alpha
// (white = regenerate, black = keep). None when nothing is painted: an all-black mask is refused.
function maskDataUrl() {
  if (!maskPainted()) return null;
  const canvas = $("mask-canvas");
  const painted = maskContext().getImageData(0, 0, canvas.width, canvas.height).data;
  const sheet = document.createElement("canvas");
  sheet.width = canvas.width;
  sheet.height = canvas.height;
  const context = sheet.getContext("2d");
  const grey = context.createImageData(canvas.width, canvas.height);
  for (let i = 0; i < painted.length; i += 4) {
    grey.data[i] = grey.data[i + 1] = grey.data[i + 2] = painted[i + 3];
    grey.data[i + 3] = 255;
  }
  context.putImageData(grey, 0, 0);
  return sheet.toDataURL("image/png");
}

// [left, top, right, bottom] in pixels, or null when nothing is extended.
function extendValues() {
  const values = SIDES.map((side) => {
    const input = $(`extend-${side}`);
    if (input.validity.badInput || (input.value !== "" && !/^\d+$/.test(input.value))) {
      throw new UserError(`Extend ${side} must be a whole number of pixels (0 or more).`);
    }
    return input.value === "" ? 0 : Number(input.value);
  });
  return values.some((value) => value > 0) ? values : null;
}

function showExtendSize() {
  const hint = $("extend-size");
  let values = null;
  try { values = extendValues(); } catch (_) { /* said on Generate */ }
  if (!values || !state.imageSize) {
    hint.textContent = "Each side is rounded up to a multiple of 16; the new border is generated.";
    return;
  }
  const [left, top, right, bottom] = values.map((value) => Math.ceil(value / 16) * 16); // as the server rounds
  const [width, height] = state.imageSize;
  hint.textContent = `The image grows to ${width + left + right} × ${height + top + bottom}.`;
}

function wireMask() {
  const canvas = $("mask-canvas");
  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    brush.down = true;
    brush.last = null;
    paintTo(canvasPoint(event));
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!brush.down) return;
    // Fast strokes deliver several points per frame: paint them all, not just the last.
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const each of events.length ? events : [event]) paintTo(canvasPoint(each));
  });
  const stop = () => {
    if (!brush.down) return;
    brush.down = false;
    brush.last = null;
    showMaskState(maskPainted());
  };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  $("brush").addEventListener("input", showBrushSize);
  $("mask-erase").addEventListener("click", () => setErase(!brush.erase));
  $("mask-invert").addEventListener("click", invertMask);
  $("mask-clear").addEventListener("click", () => {
    maskContext().clearRect(0, 0, canvas.width, canvas.height);
    showMaskState(false);
  });
  $("extend-all").addEventListener("input", () => {
    for (const side of SIDES) $(`extend-${side}`).value = $("extend-all").value;
    showExtendSize();
  });
  for (const side of SIDES) {
    $(`extend-${side}`).addEventListener("input", () => {
      $("extend-all").value = ""; // no longer the same on every side
      showExtendSize();
    });
  }
}

// -- start ---------------------------------------------------------------------------

function start() {
  $("form").addEventListener("submit", generate);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("form").requestSubmit();
    }
  });
  $("dice").addEventListener("click", () => {
    $("seed").value = String(crypto.getRandomValues(new Uint32Array(1))[0]);
  });
  $("cancel").addEventListener("click", cancelJob);
  $("api-key").value = state.apiKey;
  $("api-key").addEventListener("change", () => {
    state.apiKey = $("api-key").value.trim();
    sessionStorage.setItem(KEY_STORAGE, state.apiKey);
    clearError();
    loadModelInfo();
    if (!state.loras) loadLoras();
    if (!state.historyLoaded) loadHistory();
  });
  wireReference();
  wireMask();
  wireLoras();
  $("older").addEventListener("click", loadHistory);
  loadModelInfo();
  loadLoras();
  loadHistory();
  $("prompt").focus();
}

start();
