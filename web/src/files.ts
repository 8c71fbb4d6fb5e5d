// Collects the files a user drops or picks: single files, many files, whole folders (through
// DataTransferItem.webkitGetAsEntry and directory readers, supported by every current browser)
// and ZIP archives (sent as they are; the gateway accepts a ZIP of DICOM files).

const paths = new WeakMap<File, string>();

function isHidden(name: string): boolean {
  return name.startsWith(".") || name === "Thumbs.db" || name === "desktop.ini";
}

function fileOf(entry: FileSystemFileEntry): Promise<File> {
  return new Promise((resolve, reject) => entry.file(resolve, reject));
}

function readBatch(reader: FileSystemDirectoryReader): Promise<FileSystemEntry[]> {
  return new Promise((resolve, reject) => reader.readEntries(resolve, reject));
}

async function walk(entry: FileSystemEntry, out: File[]): Promise<void> {
  if (isHidden(entry.name)) return;
  if (entry.isFile) {
    const f = await fileOf(entry as FileSystemFileEntry);
    paths.set(f, entry.fullPath.replace(/^\//, ""));
    out.push(f);
  } else if (entry.isDirectory) {
    const reader = (entry as FileSystemDirectoryEntry).createReader();
    // readEntries returns the directory in batches (about 100 entries); read until empty.
    for (;;) {
      const batch = await readBatch(reader);
      if (!batch.length) break;
      for (const e of batch) await walk(e, out);
    }
  }
}

/** Every file of a drop, folders walked recursively, in a stable (path) order. */
export async function filesFromDrop(dt: DataTransfer): Promise<File[]> {
  const entries: FileSystemEntry[] = [];
  const plain: File[] = [];
  for (const item of Array.from(dt.items ?? [])) {
    if (item.kind !== "file") continue;
    const entry = item.webkitGetAsEntry?.();
    if (entry) entries.push(entry);
    else {
      const f = item.getAsFile();
      if (f) plain.push(f);
    }
  }
  if (!entries.length && !plain.length) return Array.from(dt.files ?? []);
  const out: File[] = [...plain];
  for (const e of entries) await walk(e, out);
  return sortByPath(out);
}

/** Files from an <input type=file> (with or without webkitdirectory), hidden files skipped. */
export function filesFromInput(input: HTMLInputElement): File[] {
  return sortByPath(Array.from(input.files ?? []).filter((f) => !isHidden(f.name)));
}

/** Display name: the path inside a picked or dropped folder when there is one. */
export function displayName(f: File): string {
  return paths.get(f) || (f as File & { webkitRelativePath?: string }).webkitRelativePath || f.name;
}

/** Files from a picker sorted by their path, so a series is sent (and packed) in a stable order. */
export function sortByPath(files: File[]): File[] {
  return [...files].sort((a, b) => displayName(a).localeCompare(displayName(b), undefined, { numeric: true }));
}

/** A DICOM file: a `.dcm` name, or "DICM" at byte 128 (the Part 10 preamble). */
export async function isDicomFile(f: File): Promise<boolean> {
  if (/\.dcm$/i.test(f.name)) return true;
  if (f.size < 132) return false;
  const head = new Uint8Array(await f.slice(128, 132).arrayBuffer());
  return head[0] === 0x44 && head[1] === 0x49 && head[2] === 0x43 && head[3] === 0x4d; // "DICM"
}

/** The top folder of a file picked or dropped inside a folder, or "" for a loose file. */
export function topFolder(f: File): string {
  const p = displayName(f);
  const i = p.indexOf("/");
  return i > 0 ? p.slice(0, i) : "";
}

export interface PackGroup {
  /** Folder name ("" for loose files). */
  folder: string;
  files: File[];
  /** Every file of the folder is DICOM: it is sent as one ZIP (one volume job). */
  dicom: boolean;
}

/** Groups files by their top folder and tells which folders hold only DICOM files. */
export async function groupForUpload(files: File[]): Promise<PackGroup[]> {
  const groups = new Map<string, File[]>();
  for (const f of files) {
    const k = topFolder(f);
    const g = groups.get(k);
    if (g) g.push(f);
    else groups.set(k, [f]);
  }
  const out: PackGroup[] = [];
  for (const [folder, fs] of groups) {
    let dicom = false;
    if (folder && fs.length > 1) {
      dicom = true;
      for (const f of fs)
        if (!(await isDicomFile(f))) {
          dicom = false;
          break;
        }
    }
    out.push({ folder, files: fs, dicom });
  }
  return out;
}

/**
 * Packs the files of a folder into one ZIP (paths inside the folder kept), client-side with
 * fflate, deflate level 1 (DICOM pixel data gains little from more). `onProgress(0..1)` by bytes.
 */
export async function packZip(folder: string, files: File[], onProgress: (frac: number) => void, signal?: { cancelled: boolean }): Promise<File> {
  const { Zip, ZipDeflate } = await import("fflate");
  const chunks: Uint8Array[] = [];
  let failure: Error | null = null;
  const zip = new Zip((err, data) => {
    if (err) failure = err;
    else chunks.push(data);
  });
  const total = files.reduce((s, f) => s + f.size, 0) || 1;
  let done = 0;
  for (const f of files) {
    if (signal?.cancelled) throw new Error("cancelled");
    const name = displayName(f).split("/").slice(1).join("/") || f.name;
    const entry = new ZipDeflate(name, { level: 1 });
    zip.add(entry);
    entry.push(new Uint8Array(await f.arrayBuffer()), true);
    if (failure) throw failure;
    done += f.size;
    onProgress(done / total);
    await new Promise((r) => setTimeout(r, 0)); // let the page paint the progress
  }
  zip.end();
  if (failure) throw failure;
  return new File(chunks as BlobPart[], `${folder}.zip`, { type: "application/zip" });
}
