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
  return out;
}

/** Files from an <input type=file> (with or without webkitdirectory), hidden files skipped. */
export function filesFromInput(input: HTMLInputElement): File[] {
  return Array.from(input.files ?? []).filter((f) => !isHidden(f.name));
}

/** Display name: the path inside a picked or dropped folder when there is one. */
export function displayName(f: File): string {
  return paths.get(f) || (f as File & { webkitRelativePath?: string }).webkitRelativePath || f.name;
}
