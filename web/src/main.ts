// Entry point: identity bar, the "new job" panel (files, operation, params, upload progress) and
// the jobs view.

import "./styles.css";
import { ApiError, errorText, identity, listOperations, loadAuthMode, tokenSubject, uploadJob, validUserId, type Operation } from "./api";
import { displayName, filesFromDrop, filesFromInput, groupForUpload, packZip } from "./files";
import { JobsView } from "./jobList";
import { buildParamsForm, type ParamsForm } from "./schemaForm";
import { installShortcuts, onPageKey, showCheatSheet } from "./shortcuts";
import { formatBytes, h, ProgressBar } from "./util";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

const jobsView = new JobsView();

// ---- identity -----------------------------------------------------------------------------

/** The identity form: a user ID (header mode) or an access token (jwt mode). Its submit handler is
 *  there from the start; it waits for the gateway's answer to GET /config (`ready`). */
function setupIdentity(ready: Promise<unknown>, onChange: () => void): void {
  const form = $<HTMLFormElement>("identity");
  const input = $<HTMLInputElement>("user-id");
  const msg = $<HTMLElement>("identity-msg");
  const refuse = (text: string) => {
    msg.textContent = text;
    msg.classList.add("error");
    input.focus();
  };
  const signedIn = (who: string, changed: boolean) => {
    msg.classList.remove("error");
    msg.textContent = `Signed in as ${who}`;
    if (changed) onChange();
  };
  const useUserId = () => {
    const id = input.value.trim();
    if (!validUserId(id)) return refuse("A user ID is 1-64 characters: letters, digits, . _ @ -");
    const changed = id !== identity.userId;
    identity.set(id);
    signedIn(id, changed);
  };
  // jwt mode: the token is kept for this tab only and never shown again.
  const useToken = () => {
    const token = input.value.trim();
    const sub = tokenSubject(token);
    if (!sub) return refuse("That is not an access token (a JWT with a subject).");
    const changed = token !== identity.token;
    identity.setToken(token);
    input.value = "";
    signedIn(sub, changed);
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void ready.then(() => (identity.mode === "jwt" ? useToken() : useUserId()));
  });
  input.value = identity.userId;
  void ready.then(() => {
    if (identity.mode === "jwt") {
      const label = form.querySelector("label");
      if (label) label.textContent = "Access token";
      Object.assign(input, { type: "password", autocomplete: "off", placeholder: "paste a token", value: "" });
      input.removeAttribute("pattern");
      input.removeAttribute("maxlength");
      $<HTMLButtonElement>("switch-user").textContent = "Use this token";
    }
    const ask = identity.mode === "jwt" ? "Paste an access token to start." : "Enter your user ID to start.";
    msg.textContent = identity.userId ? `Signed in as ${identity.userId}` : ask;
  });
}

// ---- new job ------------------------------------------------------------------------------

interface Picked {
  file: File;
  bar: ProgressBar;
  row: HTMLLIElement;
}

function setupUpload(): { reset: () => void } {
  const drop = $<HTMLElement>("dropzone");
  const filesInput = $<HTMLInputElement>("file-input");
  const folderInput = $<HTMLInputElement>("folder-input");
  const list = $<HTMLUListElement>("file-list");
  const summary = $<HTMLElement>("file-summary");
  const clearBtn = $<HTMLButtonElement>("clear-files");
  const opSelect = $<HTMLSelectElement>("operation");
  const opDesc = $<HTMLElement>("operation-desc");
  const paramsBox = $<HTMLElement>("params");
  const submit = $<HTMLButtonElement>("submit");
  const errorBox = $<HTMLElement>("upload-error");
  const uploadStatus = $<HTMLElement>("upload-status");
  const form = $<HTMLFormElement>("new-job");

  let picked: Picked[] = [];
  let ops: Operation[] = [];
  let paramsForm: ParamsForm | null = null;
  let uploading = false;

  function showError(text: string): void {
    errorBox.textContent = text;
    errorBox.hidden = !text;
    if (text) errorBox.scrollIntoView({ block: "nearest" });
  }

  let packing = false;
  let pickSeq = 0;

  function showPicked(files: File[], note = ""): void {
    picked = files.map((file) => {
      const bar = new ProgressBar(`Upload of ${displayName(file)}`, "bar-small");
      const row = h(
        "li",
        { class: "file-row" },
        h("span", { class: "file-name", title: displayName(file) }, displayName(file)),
        h("span", { class: "muted file-size" }, formatBytes(file.size)),
        bar.el,
      );
      return { file, bar, row };
    });
    list.replaceChildren(...picked.map((p) => p.row));
    const total = picked.reduce((s, p) => s + p.file.size, 0);
    summary.textContent = picked.length ? `${picked.length} file(s), ${formatBytes(total)}${note}` : "No files chosen.";
    clearBtn.hidden = !picked.length;
  }

  /**
   * Takes the picked or dropped files. A folder whose files are all DICOM (a series) is packed
   * into one ZIP named after the folder, so it becomes one volume job like the ZIP of the series.
   */
  async function setFiles(files: File[]): Promise<void> {
    if (uploading) return;
    const seq = ++pickSeq;
    packing = false;
    uploadStatus.textContent = "";
    showError("");
    try {
      const groups = files.length ? await groupForUpload(files) : [];
      if (seq !== pickSeq) return;
      const out: File[] = [];
      const packed: string[] = [];
      for (const g of groups) {
        if (!g.dicom) {
          out.push(...g.files);
          continue;
        }
        packing = true;
        updateSubmit();
        list.replaceChildren();
        clearBtn.hidden = true;
        const bar = new ProgressBar(`Packing of ${g.folder}`, "bar-small");
        list.replaceChildren(h("li", { class: "file-row packing" }, h("span", { class: "file-name" }, `${g.folder}/`), h("span", { class: "muted file-size" }, `${g.files.length} DICOM files`), bar.el));
        summary.textContent = `Packing ${g.folder} (${g.files.length} DICOM files) into one ZIP…`;
        const stale = { cancelled: false };
        const zip = await packZip(g.folder, g.files, (frac) => {
          if (seq !== pickSeq) stale.cancelled = true;
          bar.set(frac * 100, "running");
          summary.textContent = `Packing ${g.folder} (${g.files.length} DICOM files) into one ZIP… ${Math.round(frac * 100)} %`;
        }, stale);
        if (seq !== pickSeq) return;
        out.push(zip);
        packed.push(`${g.folder} (${g.files.length} DICOM files)`);
      }
      packing = false;
      showPicked(out, packed.length ? ` · packed as a series: ${packed.join(", ")}` : "");
    } catch (err) {
      if (seq !== pickSeq) return;
      packing = false;
      showPicked([]);
      showError(`The files could not be prepared: ${(err as Error).message || err}`);
    }
    updateSubmit();
  }

  function updateSubmit(): void {
    submit.disabled = uploading || packing || !picked.length || !opSelect.value || !identity.userId;
  }

  // drag and drop
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    if (e.dataTransfer) e.dataTransfer.dropEffect = "copy";
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (!e.dataTransfer) return;
    try {
      await setFiles(await filesFromDrop(e.dataTransfer));
    } catch (err) {
      showError(`The dropped files could not be read: ${(err as Error).message}`);
    }
  });
  // keep a file dropped next to the zone from opening in the tab
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());

  $<HTMLButtonElement>("pick-files").addEventListener("click", () => filesInput.click());
  $<HTMLButtonElement>("pick-folder").addEventListener("click", () => folderInput.click());
  filesInput.addEventListener("change", () => {
    void setFiles(filesFromInput(filesInput));
    filesInput.value = "";
  });
  folderInput.addEventListener("change", () => {
    void setFiles(filesFromInput(folderInput));
    folderInput.value = "";
  });
  clearBtn.addEventListener("click", () => void setFiles([]));

  // operations
  function showOperation(): void {
    const op = ops.find((o) => o.name === opSelect.value);
    opDesc.textContent = op ? [op.description, op.accepts?.length ? `Accepts: ${op.accepts.join(", ")}.` : "", op.outputs ? `Outputs: ${op.outputs}.` : ""].filter(Boolean).join(" ") : "";
    paramsForm = op ? buildParamsForm(op.params_schema ?? {}) : null;
    paramsBox.replaceChildren(...(paramsForm ? [paramsForm.el] : []));
    updateSubmit();
  }
  opSelect.addEventListener("change", showOperation);

  async function loadOperations(): Promise<void> {
    opSelect.replaceChildren(h("option", { value: "" }, "Loading operations…"));
    try {
      ops = (await listOperations()).operations ?? [];
      opSelect.replaceChildren(...ops.map((o) => h("option", { value: o.name }, o.title ? `${o.title} (${o.name})` : o.name)));
      const preferred = ops.find((o) => o.name === "blur") ?? ops[0];
      if (preferred) opSelect.value = preferred.name;
      showOperation();
    } catch (e) {
      opSelect.replaceChildren(h("option", { value: "" }, "Operations unavailable"));
      opDesc.textContent = `The operations could not be loaded: ${errorText(e)}`;
    }
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    showError("");
    if (!identity.userId) {
      showError("Enter your user ID first.");
      $("user-id").focus();
      return;
    }
    let params: Record<string, unknown>;
    try {
      params = paramsForm ? paramsForm.values() : {};
    } catch (err) {
      showError((err as Error).message);
      return;
    }
    if (!picked.length || packing) return;
    uploading = true;
    updateSubmit();
    const sizes = picked.map((p) => p.file.size);
    const total = sizes.reduce((a, b) => a + b, 0);
    picked.forEach((p) => p.bar.set(0, "running"));
    uploadStatus.textContent = "Uploading…";
    // XHR reports bytes of the whole multipart body; the files are sent in order, so each file's
    // share follows from the running total of the sizes before it.
    const handle = uploadJob(
      picked.map((p) => p.file),
      opSelect.value,
      params,
      (loaded, bodyTotal) => {
        const sent = (loaded / bodyTotal) * total;
        let offset = 0;
        picked.forEach((p, i) => {
          const part = sizes[i] ? Math.min(1, Math.max(0, (sent - offset) / sizes[i])) : sent >= offset ? 1 : 0;
          p.bar.set(part * 100, part >= 1 ? "success" : "running");
          offset += sizes[i];
        });
        uploadStatus.textContent = `Uploading… ${Math.round((loaded / bodyTotal) * 100)} %`;
      },
    );
    try {
      const created = await handle.promise;
      picked.forEach((p) => p.bar.set(100, "success"));
      // The files are sent: forget them, so a second click cannot submit the same job again.
      const sentRows = picked.map((p) => p.row);
      summary.textContent = `${picked.length} file(s) sent. Choose files for the next job.`;
      picked = [];
      clearBtn.hidden = true;
      uploadStatus.textContent = `Uploaded. Job ${created.job_id.slice(0, 8)} created.`;
      void jobsView.added(created.job_id);
      // Keep the finished upload bars on screen until the next pick replaces them.
      list.replaceChildren(...sentRows);
    } catch (err) {
      picked.forEach((p) => p.bar.set(0, "failed"));
      uploadStatus.textContent = "";
      showError(err instanceof ApiError ? `Upload rejected. ${err.text}` : String(err));
    } finally {
      uploading = false;
      updateSubmit();
    }
  });

  void setFiles([]);
  void loadOperations();
  return {
    reset() {
      uploading = false;
      void setFiles([]);
      void loadOperations();
    },
  };
}

// ---- side panel: open, or folded away so that an open result takes the screen (unless the user
// opened it again: then it stays) -----------------------------------------------------------------

function setupSidePanel(): void {
  const layout = $<HTMLElement>("main");
  const toggle = $<HTMLButtonElement>("toggle-side");
  let pinned = false; // the user opened it: it stays open
  const set = (open: boolean) => {
    layout.dataset.side = open ? "open" : "closed";
    toggle.setAttribute("aria-expanded", String(open));
    toggle.setAttribute("aria-label", open ? "Hide the side panel" : "Show the side panel");
  };
  const flip = () => {
    const open = layout.dataset.side !== "open";
    pinned = open;
    set(open);
  };
  set(true);
  toggle.addEventListener("click", flip);
  onPageKey("j", flip);
  document.addEventListener("result-shown", () => {
    if (!pinned) set(false);
  });
  document.addEventListener("detail-empty", () => set(true));
}

// ---- start --------------------------------------------------------------------------------

function start(): void {
  const ready = loadAuthMode();
  $("jobs-slot").replaceWith(jobsView.listEl);
  $("detail-slot").replaceWith(jobsView.detailEl);
  const upload = setupUpload();
  setupSidePanel();
  installShortcuts();
  $("show-shortcuts").addEventListener("click", showCheatSheet);
  onPageKey("n", () => jobsView.stepTask(1));
  onPageKey("p", () => jobsView.stepTask(-1));
  onPageKey("f", () => jobsView.fullscreen());
  setupIdentity(ready, () => {
    upload.reset();
    history.replaceState(null, "", location.pathname + location.search);
    void jobsView.reload(false);
  });
  window.addEventListener("hashchange", () => {
    if (identity.userId) void jobsView.openFromHash();
  });
  void ready.then(() => {
    if (identity.userId) void jobsView.reload();
    else {
      jobsView.clear();
      $("user-id").focus();
    }
  });
}

start();
